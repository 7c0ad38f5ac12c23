rule tables:
    """Collect every fine-tuning run's metrics into one tidy table and a summary (mean,
    std and the bootstrap confidence interval over test chips and seeds, from each run's
    predictions), the paired differences from scratch, the regional claim, the results
    tables as Markdown and LaTeX (mean [CI], controls included) and, where the design
    allows, the label-efficiency table."""
    input:
        metrics=finetune_metrics(),
        predictions=finetune_predictions(),
    output:
        **label_efficiency_output(),
        metrics=report(
            "results/tables/finetune_metrics.csv",
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "all runs (tidy)"},
        ),
        summary=report(
            "results/tables/finetune_summary.csv",
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "summary over seeds"},
        ),
        differences=report(
            "results/tables/differences.csv",
            caption="../report/differences_table.rst",
            category="Tables",
            labels={"table": "paired differences from scratch"},
        ),
        regional=report(
            "results/tables/regional.csv",
            caption="../report/regional_table.rst",
            category="Tables",
            labels={"table": "regional claim"},
        ),
        markdown="results/tables/results.md",
        latex="results/tables/results.tex",
    log:
        "logs/tables/tables.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        efficiency=tables_efficiency_arg,
        bootstrap=config["statistics"]["bootstrap"],
        confidence=config["statistics"]["confidence"],
        seed=config["seed"],
    shell:
        "sarssl tables {input.metrics:q} --out {output.metrics:q}"
        " --summary {output.summary:q} --markdown {output.markdown:q}"
        " --latex {output.latex:q} --differences {output.differences:q}"
        " --regional {output.regional:q} --bootstrap {params.bootstrap:q}"
        " --confidence {params.confidence:q} --seed {params.seed:q}"
        " {params.efficiency} > {log:q} 2>&1"


rule figures:
    """Every figure and table of the study (`snakemake figures`); with
    `--forcerun tables` they are all redrawn from the finished runs."""
    input:
        table_targets(),
        figure_targets(),
