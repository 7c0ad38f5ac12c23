rule tables:
    """Collect every fine-tuning run's metrics into one tidy table, a summary (mean and
    std over seeds), the results tables as Markdown and LaTeX (best value in bold) and,
    where the design allows, the label-efficiency table."""
    input:
        metrics=finetune_metrics(),
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
        markdown="results/tables/results.md",
        latex="results/tables/results.tex",
    log:
        "logs/tables/tables.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        efficiency=tables_efficiency_arg,
    shell:
        "sarssl tables {input.metrics:q} --out {output.metrics:q}"
        " --summary {output.summary:q} --markdown {output.markdown:q}"
        " --latex {output.latex:q} {params.efficiency} > {log:q} 2>&1"


rule figures:
    """Every figure and table of the study (`snakemake figures`); with
    `--forcerun tables` they are all redrawn from the finished runs."""
    input:
        table_targets(),
        figure_targets(),
