rule composite:
    """Seasonal composites: per season, the mean (or median) of the scenes' linear power,
    then 12 dB channels in sarssl.CHANNELS order (VV-VH, VV, VH x winter..fall), plus
    the number of observations per season."""
    input:
        scenes=composite_scenes,
    output:
        composite="results/composites/{area}.tif",
        counts="results/composites/{area}_count.tif",
    log:
        "logs/composite/{area}.log",
    benchmark:
        "benchmarks/composite/{area}.tsv"
    conda:
        "../envs/geo.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        year=config["year"],
        method=config["composite"]["method"],
        seasons=seasons_json(),
        min_scenes=config["composite"]["min_scenes_per_season"],
    shell:
        "sarssl composite {input.scenes:q} --year {params.year:q} --method {params.method:q}"
        " --seasons {params.seasons} --out {output.composite:q}"
        " --count-out {output.counts:q} --min-scenes-per-season {params.min_scenes:q} > {log:q} 2>&1"
