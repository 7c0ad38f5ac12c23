rule simulate:
    """Synthesise demo Sentinel-1 GRD products (zipped SAFE) and their truth rasters
    from a bundled real product template (`source: simulate` areas with labels)."""
    input:
        dem=simulate_dem_input,
    output:
        products=directory("resources/products/{area}"),
        landcover="resources/truth/{area}/landcover.tif",
        treecover="resources/truth/{area}/treecover.tif",
        dem="resources/truth/{area}/dem.tif",
        sigma0="resources/truth/{area}/sigma0_table.csv",
        acquisitions="resources/truth/{area}/acquisitions.csv",
    log:
        "logs/simulate/{area}.log",
    benchmark:
        "benchmarks/simulate/{area}.tsv"
    wildcard_constraints:
        area=area_pattern(labelled=True),
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        template=simulate_template,
        bbox=bbox_arg,
        seed=chips_seed,
        dem=simulate_dem_arg,
        truth_dir=truth_dir,
        year=config["year"],
        per_season=simulate_per_season,
        enl=config["simulate"]["enl"],
    shell:
        "sarssl simulate --template {params.template:q} --area {wildcards.area:q}"
        " --bbox {params.bbox} --year {params.year:q} --per-season {params.per_season:q}"
        " --enl {params.enl:q} --seed {params.seed:q} {params.dem}"
        " --products-dir {output.products:q} --truth-dir {params.truth_dir:q}"
        " > {log:q} 2>&1"


rule simulate_unlabelled:
    """Synthesise the products of an unlabelled area (`labels: false`, pretraining only):
    the same simulator, but no label rasters are written."""
    input:
        dem=simulate_dem_input,
    output:
        products=directory("resources/products/{area}"),
        dem="resources/truth/{area}/dem.tif",
        sigma0="resources/truth/{area}/sigma0_table.csv",
        acquisitions="resources/truth/{area}/acquisitions.csv",
    log:
        "logs/simulate/{area}.log",
    benchmark:
        "benchmarks/simulate/{area}.tsv"
    wildcard_constraints:
        area=area_pattern(labelled=False),
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        template=simulate_template,
        bbox=bbox_arg,
        seed=chips_seed,
        dem=simulate_dem_arg,
        truth_dir=truth_dir,
        year=config["year"],
        per_season=simulate_per_season,
        enl=config["simulate"]["enl"],
    shell:
        "sarssl simulate --template {params.template:q} --area {wildcards.area:q}"
        " --bbox {params.bbox} --year {params.year:q} --per-season {params.per_season:q}"
        " --enl {params.enl:q} --seed {params.seed:q} {params.dem} --no-labels"
        " --products-dir {output.products:q} --truth-dir {params.truth_dir:q}"
        " > {log:q} 2>&1"
