rule finetune:
    """Fine-tune (or linear-probe) an encoder on one task at one label fraction and seed,
    on one area's chips; evaluate on its test split."""
    input:
        stores=expand("results/chips/{{area}}/{file}", file=CHIP_FILES),
        fractions="results/chips/{area}/fractions.json",
        stats="results/chips/stats.json",
        encoder=finetune_encoder,
    output:
        metrics="results/finetune/{task}/{init}/{protocol}/{area}/f{fraction}_s{seed}/metrics.json",
        predictions="results/finetune/{task}/{init}/{protocol}/{area}/f{fraction}_s{seed}/predictions.npz",
        run="results/finetune/{task}/{init}/{protocol}/{area}/f{fraction}_s{seed}/run.json",
        checkpoint="results/finetune/{task}/{init}/{protocol}/{area}/f{fraction}_s{seed}/checkpoint.pt",
    log:
        "logs/finetune/{task}/{init}/{protocol}/{area}/f{fraction}_s{seed}.log",
    benchmark:
        "benchmarks/finetune/{task}/{init}/{protocol}/{area}/f{fraction}_s{seed}.tsv"
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
        out_dir=out_dir,
    shell:
        "OMP_NUM_THREADS={threads} OMP_WAIT_POLICY=PASSIVE sarssl finetune --task {wildcards.task:q} --threads {threads}"
        " {params.init} --protocol {wildcards.protocol:q} --fraction {wildcards.fraction:q}"
        " --seed {wildcards.seed:q} --chips-dir {params.chips_dir:q}"
        " --stats {input.stats:q} --hparams {params.hparams}"
        " --finetune-area {wildcards.area:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
