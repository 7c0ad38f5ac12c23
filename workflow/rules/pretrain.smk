rule pretrain:
    """Self-supervised pretraining of the ViT encoder (MAE or DINO) on the chips of the
    pretraining areas; exports the encoder as safetensors loadable by timm. A job given
    gpu=N > 1 (profile set-resources) trains data-parallel on its N GPUs via torchrun.
    Preemption-safe: a resume checkpoint is written every pretrain.checkpoint_every steps
    and on SIGTERM/SIGUSR1 into resume/ beside the outputs (not a declared output, so
    Snakemake keeps it), and a rerun continues from it bit-identically.
    """
    input:
        stores=pretrain_stores,
        stats="results/chips/stats.json",
    output:
        encoder="results/pretrain/{method}/encoder.safetensors",
        encoder_json="results/pretrain/{method}/encoder.json",
        checkpoint="results/pretrain/{method}/checkpoint.pt",
        metrics="results/pretrain/{method}/metrics.jsonl",
        run="results/pretrain/{method}/run.json",
        snapshots=directory("results/pretrain/{method}/snapshots"),
    log:
        "logs/pretrain/{method}.log",
    benchmark:
        "benchmarks/pretrain/{method}.tsv"
    # first in line once its chips exist: it is the DAG's critical path (every pretrained
    # fine-tuning job waits for it), and a 2-thread job would otherwise wait behind 1-thread
    # fine-tuning jobs until both cores happen to be free
    priority: 50
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=720,
    params:
        chips_dirs=pretrain_chips_args(),
        hparams=pretrain_hparams,
        seed=config["seed"],
        out_dir=out_dir,
        launcher=pretrain_launcher,
        checkpoint_every=config["pretrain"]["checkpoint_every"],
        snapshot_every=config["pretrain"]["snapshot_every"],
        deterministic=str(config["pretrain"]["deterministic"]).lower(),
        resume_dir=resume_dir,
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} pretrain --method {wildcards.method:q} --threads {threads}"
        " {params.chips_dirs} --stats {input.stats:q} --hparams {params.hparams}"
        " --seed {params.seed:q} --out-dir {params.out_dir:q}"
        " --checkpoint-every {params.checkpoint_every:q} --deterministic {params.deterministic:q}"
        " --snapshot-every {params.snapshot_every:q}"
        " --resume-dir {params.resume_dir:q} > {log:q} 2>&1"
