rule tables:
    """Collect every fine-tuning run's metrics into one tidy table and a summary
    (mean and std over seeds)."""
    input:
        metrics=finetune_metrics(),
    output:
        metrics="results/tables/finetune_metrics.csv",
        summary="results/tables/finetune_summary.csv",
    log:
        "logs/tables/tables.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    shell:
        "sarssl tables {input.metrics} --out {output.metrics}"
        " --summary {output.summary} > {log} 2>&1"


rule plot_learning_curves:
    """Metric versus label fraction per task, initialisation, protocol and area."""
    input:
        metrics="results/tables/finetune_metrics.csv",
    output:
        png=report(
            "results/figures/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Fine-tuning",
            labels={"figure": "learning curves"},
        ),
        pdf="results/figures/learning_curves.pdf",
    log:
        "logs/plot_learning_curves/learning_curves.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    shell:
        "sarssl plot learning-curves --metrics {input.metrics} --out {output.png}"
        " > {log} 2>&1"
