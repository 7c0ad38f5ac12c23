rule chips:
    """Cut the composite into labelled chips (land cover classes, tree cover %) and assign
    spatial-band splits (the label fractions are the rule below's). An unlabelled area
    (`labels: false`) gets all-ignore labels and only train chips."""
    input:
        unpack(chips_label_inputs),
        composite="results/composites/{area}.tif",
    output:
        index="results/chips/{area}/index.parquet",
        x="results/chips/{area}/x.npy",
        landcover="results/chips/{area}/landcover.npy",
        treecover="results/chips/{area}/treecover.npy",
        qa="results/chips/{area}/qa.csv",
        store="results/chips/{area}/store.json",
    log:
        "logs/chips/{area}.log",
    benchmark:
        "benchmarks/chips/{area}.tsv"
    conda:
        "../envs/geo.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        options=chips_args(),
        labels=chips_label_args,
        out_dir=out_dir,
    shell:
        "sarssl chips --composite {input.composite:q} {params.labels}"
        " --area {wildcards.area:q} {params.options}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule fractions:
    """Nested label-fraction subsets of the training chips: its own rule, so that changing
    finetune.fractions re-runs only this and the fine-tuning, not the chips or pretraining.
    """
    input:
        index="results/chips/{area}/index.parquet",
    output:
        fractions="results/chips/{area}/fractions.json",
    log:
        "logs/fractions/{area}.log",
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        fractions=fractions_arg(),
        seed=chips_seed,
        seeds=fraction_seeds_arg(),
        out_dir=out_dir,
    shell:
        "sarssl fractions --chips-dir {params.out_dir:q} --fractions {params.fractions:q}"
        " --seed {params.seed:q} --seeds {params.seeds:q} > {log:q} 2>&1"


rule stats:
    """Per-channel mean and standard deviation of the training chips of the
    pretraining areas: the normalisation every model uses."""
    input:
        stores=pretrain_stores,
    output:
        stats="results/chips/stats.json",
    log:
        "logs/stats/stats.log",
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        chips_dirs=stats_args(),
    shell:
        "sarssl stats {params.chips_dirs} --out {output.stats:q} > {log:q} 2>&1"
