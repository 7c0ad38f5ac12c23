rule plot_preprocessing_qa:
    """Raw DN -> calibrated sigma0 -> speckle-filtered window of the area's first product,
    in radar geometry; the window is centred on the AOI (from the annotation's
    geolocation grid), so only that window of the measurement is read."""
    input:
        product=qa_product,
    output:
        png=report(
            "results/figures/{area}/preprocessing_qa.png",
            caption="../report/preprocessing_qa.rst",
            category="Data",
            subcategory="{area}",
            labels={"area": "{area}", "figure": "preprocessing QA"},
        ),
        pdf="results/figures/{area}/preprocessing_qa.pdf",
    log:
        "logs/figures/{area}/preprocessing_qa.log",
    conda:
        "../envs/geo.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        aoi=bbox_arg,
        size=config["figures"]["qa_window"],
        calibration=config["preprocess"]["calibration"],
        speckle_filter=config["preprocess"]["speckle_filter"],
        speckle_window=config["preprocess"]["speckle_window"],
        dpi=figure_dpi(),
    shell:
        "sarssl plot preprocessing-qa --product {input.product:q} --aoi {params.aoi}"
        " --size {params.size:q} --calibration {params.calibration:q}"
        " --speckle-filter {params.speckle_filter:q}"
        " --speckle-window {params.speckle_window:q} --dpi {params.dpi:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule plot_composites:
    """The four seasonal composites of an area in SAR false colour."""
    input:
        composite="results/composites/{area}.tif",
    output:
        png=report(
            "results/figures/{area}/composites.png",
            caption="../report/composites.rst",
            category="Data",
            subcategory="{area}",
            labels={"area": "{area}", "figure": "seasonal composites"},
        ),
        pdf="results/figures/{area}/composites.pdf",
    log:
        "logs/figures/{area}/composites.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        dpi=figure_dpi(),
    shell:
        "sarssl plot composites --composite {input.composite:q} --title {wildcards.area:q}"
        " --dpi {params.dpi:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_backscatter_distributions:
    """VV/VH backscatter per land-cover class and season (seeded pixel sample)."""
    input:
        composite="results/composites/{area}.tif",
        landcover=landcover_input,
    output:
        png=report(
            "results/figures/{area}/backscatter_distributions.png",
            caption="../report/backscatter_distributions.rst",
            category="Data",
            subcategory="{area}",
            labels={"area": "{area}", "figure": "backscatter by class"},
        ),
        pdf="results/figures/{area}/backscatter_distributions.pdf",
    log:
        "logs/figures/{area}/backscatter_distributions.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        seed=chips_seed,
        dpi=figure_dpi(),
    shell:
        "sarssl plot backscatter-distributions --composite {input.composite:q}"
        " --landcover {input.landcover:q} --seed {params.seed:q} --title {wildcards.area:q}"
        " --dpi {params.dpi:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_data_statistics:
    """Scenes per season (catalogues), chips per split and class shares per split."""
    input:
        catalogues=catalogue_csvs,
        stores=store_files(used_areas()),
    output:
        png=report(
            "results/figures/data_statistics.png",
            caption="../report/data_statistics.rst",
            category="Data",
            subcategory="all areas",
            labels={"area": "all", "figure": "data statistics"},
        ),
        pdf="results/figures/data_statistics.pdf",
    log:
        "logs/figures/data_statistics.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        chips_dirs=chips_dirs_args(used_areas(), option=""),
        year=config["year"],
        seasons=seasons_json(),
        dpi=figure_dpi(),
    shell:
        "sarssl plot data-statistics --catalogue {input.catalogues:q}"
        " --chips-dir {params.chips_dirs} --year {params.year:q}"
        " --seasons {params.seasons} --dpi {params.dpi:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_pretraining_curves:
    """Pretraining loss per step of every method and DINO's collapse diagnostics."""
    input:
        metrics=expand(
            "results/pretrain/{method}/metrics.jsonl",
            method=config["pretrain"]["methods"],
        ),
        runs=expand(
            "results/pretrain/{method}/run.json", method=config["pretrain"]["methods"]
        ),
        snapshots=expand(
            "results/pretrain/{method}/snapshots", method=config["pretrain"]["methods"]
        ),
        knn=knn_probe_inputs(),
    output:
        png=report(
            "results/figures/pretraining_curves.png",
            caption="../report/pretraining_curves.rst",
            category="Pretraining",
            subcategory="all areas",
            labels={"area": "all", "figure": "pretraining curves"},
        ),
        pdf="results/figures/pretraining_curves.pdf",
    log:
        "logs/figures/pretraining_curves.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        runs=pretraining_runs_arg(),
        knn=knn_probe_args(),
        dpi=figure_dpi(),
    shell:
        "sarssl plot pretraining-curves --run {params.runs} {params.knn} --dpi {params.dpi:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule plot_mae_reconstructions:
    """MAE input, random mask and reconstruction of a few test chips of an area."""
    input:
        checkpoint="results/pretrain/mae/checkpoint.pt",
        encoder_json="results/pretrain/mae/encoder.json",
        stats="results/chips/stats.json",
        stores=expand("results/chips/{{area}}/{file}", file=CHIP_FILES),
    output:
        png=report(
            "results/figures/{area}/mae_reconstructions.png",
            caption="../report/mae_reconstructions.rst",
            category="Pretraining",
            subcategory="{area}",
            labels={"area": "{area}", "figure": "MAE reconstructions"},
        ),
        pdf="results/figures/{area}/mae_reconstructions.pdf",
    log:
        "logs/figures/{area}/mae_reconstructions.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        chips_dir=chips_dir,
        seed=chips_seed,
        dpi=figure_dpi(),
    shell:
        "OMP_NUM_THREADS={threads} sarssl plot mae-reconstructions"
        " --checkpoint {input.checkpoint:q} --chips-dir {params.chips_dir:q}"
        " --stats {input.stats:q} --seed {params.seed:q} --dpi {params.dpi:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule plot_attention:
    """Last-layer CLS attention of the DINO encoder's heads over test chips of an area."""
    input:
        encoder="results/pretrain/dino/encoder.safetensors",
        encoder_json="results/pretrain/dino/encoder.json",
        stores=expand("results/chips/{{area}}/{file}", file=CHIP_FILES),
    output:
        png=report(
            "results/figures/{area}/attention.png",
            caption="../report/attention.rst",
            category="Pretraining",
            subcategory="{area}",
            labels={"area": "{area}", "figure": "DINO attention"},
        ),
        pdf="results/figures/{area}/attention.pdf",
    log:
        "logs/figures/{area}/attention.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        chips_dir=chips_dir,
        seed=chips_seed,
        dpi=figure_dpi(),
    shell:
        "OMP_NUM_THREADS={threads} sarssl plot attention --encoder {input.encoder:q}"
        " --chips-dir {params.chips_dir:q} --seed {params.seed:q} --dpi {params.dpi:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule plot_embeddings:
    """PCA of the pretrained encoders' chip embeddings, by land-cover class and area."""
    input:
        encoders=embeddings_encoders(),
        stores=store_files(used_areas()),
    output:
        png=report(
            "results/figures/embeddings.png",
            caption="../report/embeddings.rst",
            category="Pretraining",
            subcategory="all areas",
            labels={"area": "all", "figure": "embeddings (PCA)"},
        ),
        pdf="results/figures/embeddings.pdf",
    log:
        "logs/figures/embeddings.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        options=embeddings_args,
        max_chips=config["figures"]["max_chips"],
        seed=config["seed"],
        dpi=figure_dpi(),
    shell:
        "OMP_NUM_THREADS={threads} sarssl plot embeddings {params.options}"
        " --max-chips {params.max_chips:q} --seed {params.seed:q} --dpi {params.dpi:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule plot_qualitative:
    """Input, truth and every initialisation's predicted maps on test chips of an area
    (full fine-tuning with the most labels, first seed)."""
    input:
        unpack(qualitative_predictions),
        stores=expand("results/chips/{{area}}/{file}", file=CHIP_FILES),
    output:
        png=report(
            "results/figures/{area}/qualitative.png",
            caption="../report/qualitative.rst",
            category="Fine-tuning",
            subcategory="{area}",
            labels={"area": "{area}", "figure": "predicted maps"},
        ),
        pdf="results/figures/{area}/qualitative.pdf",
    log:
        "logs/figures/{area}/qualitative.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        options=qualitative_args,
        chips_dir=chips_dir,
        seed=chips_seed,
        dpi=figure_dpi(),
    shell:
        "sarssl plot qualitative --chips-dir {params.chips_dir:q} {params.options}"
        " --seed {params.seed:q} --dpi {params.dpi:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_learning_curves:
    """Metric versus label fraction per task, initialisation, protocol and area, with
    bootstrap confidence bands and the controls (per-pixel, random frozen, U-Net)."""
    input:
        summary="results/tables/finetune_summary.csv",
    output:
        png=report(
            "results/figures/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Fine-tuning",
            subcategory="all areas",
            labels={"area": "all", "figure": "learning curves"},
        ),
        pdf="results/figures/learning_curves.pdf",
    log:
        "logs/figures/learning_curves.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        dpi=figure_dpi(),
    shell:
        "sarssl plot learning-curves --summary {input.summary:q} --dpi {params.dpi:q}"
        " --out {output.png:q} > {log:q} 2>&1"


rule plot_label_efficiency:
    """Fraction of labels each pretrained encoder needs to match scratch at 100 %, with
    its bootstrap interval; "not detected" where the gain's interval includes 0."""
    input:
        efficiency="results/tables/label_efficiency.csv",
    output:
        png=report(
            "results/figures/label_efficiency.png",
            caption="../report/label_efficiency.rst",
            category="Fine-tuning",
            subcategory="all areas",
            labels={"area": "all", "figure": "label efficiency"},
        ),
        pdf="results/figures/label_efficiency.pdf",
    log:
        "logs/figures/label_efficiency.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        dpi=figure_dpi(),
    shell:
        "sarssl plot label-efficiency --efficiency {input.efficiency:q}"
        " --dpi {params.dpi:q} --out {output.png:q} > {log:q} 2>&1"


rule plot_training_curves:
    """Validation score vs optimiser step of every learning rate tried by the runs that
    searched it (convergence and lr selection of the fine-tuning)."""
    input:
        runs=training_curve_runs(),
    output:
        png=report(
            "results/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="Fine-tuning",
            labels={"area": "all", "figure": "training curves"},
        ),
        pdf="results/figures/training_curves.pdf",
    log:
        "logs/figures/training_curves.log",
    conda:
        "../envs/plot.yaml"
    threads: 1
    params:
        dpi=figure_dpi(),
    shell:
        "sarssl plot training-curves --runs {input.runs:q} --dpi {params.dpi:q}"
        " --out {output.png:q} > {log:q} 2>&1"
