rule finetune:
    """Train one init under one protocol on one task and area at every label fraction and
    seed of the design (one process: the runs share its start-up), each run on its seed's
    label subset, its learning rate chosen on the validation split, scored once on the
    test split."""
    input:
        stores=expand("results/chips/{{area}}/{file}", file=CHIP_FILES),
        fractions="results/chips/{area}/fractions.json",
        stats="results/chips/stats.json",
        encoder=finetune_encoder,
    output:
        metrics=finetune_run_files("metrics.json"),
        predictions=finetune_run_files("predictions.npz"),
        run=finetune_run_files("run.json"),
        checkpoint=finetune_run_files("checkpoint.pt"),
    log:
        "logs/finetune/{task}/{init}/{protocol}/{area}.log",
    benchmark:
        "benchmarks/finetune/{task}/{init}/{protocol}/{area}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        init=finetune_init_args,
        hparams=finetune_hparams(),
        chips_dir=chips_dir,
        fractions=finetune_fractions_arg(),
        seeds=fraction_seeds_arg(),
        runs_dir="results/finetune/{task}/{init}/{protocol}/{area}",
    shell:
        "OMP_NUM_THREADS={threads} OMP_WAIT_POLICY=PASSIVE sarssl finetune --task {wildcards.task:q} --threads {threads}"
        " {params.init} --protocol {wildcards.protocol:q} --fraction {params.fractions:q}"
        " --seed {params.seeds:q} --chips-dir {params.chips_dir:q}"
        " --stats {input.stats:q} --hparams {params.hparams}"
        " --finetune-area {wildcards.area:q} --runs-dir {params.runs_dir:q} > {log:q} 2>&1"
