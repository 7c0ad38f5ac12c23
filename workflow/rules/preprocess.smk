rule preprocess:
    """Raw GRD product -> calibrated, speckle-filtered, terrain-corrected GeoTIFF on the
    area grid (orbit, thermal noise and border noise removal, calibration, optional
    terrain flattening, speckle filter, range-Doppler terrain correction), its mask and
    STAC Item; ``preprocess.product: nrb`` makes CEOS-ARD NRB instead (terrain-flattened
    gamma0, linear) with the sidecar layers ``{scene}.<layer>.tif`` (docs/ceos-ard.md).
    """
    input:
        product=preprocess_product,
        dem=dem_input,
        orbit=preprocess_orbit,
    output:
        scene="results/preprocessed/{area}/{scene}.tif",
        mask="results/preprocessed/{area}/{scene}.mask.tif",
        stac="results/preprocessed/{area}/{scene}.json",
    log:
        "logs/preprocess/{area}/{scene}.log",
    benchmark:
        "benchmarks/preprocess/{area}/{scene}.tsv"
    conda:
        "../envs/geo.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        options=preprocess_args,
    shell:
        "OMP_NUM_THREADS={threads} NUMBA_NUM_THREADS={threads}"
        " sarssl preprocess {input.product:q} --dem {input.dem:q} {params.options}"
        " --out {output.scene:q} > {log:q} 2>&1"


rule stac_collection:
    """The STAC Collection of an area's preprocessed scenes (their Items linked)."""
    input:
        # each scene's Item is written with (and beside) its .tif
        scenes=composite_scenes,
    output:
        "results/stac/{area}/collection.json",
    log:
        "logs/stac/{area}.log",
    conda:
        "../envs/geo.yaml"
    threads: 1
    shell:
        "python -m sarssl.sar.stac results/preprocessed/{wildcards.area:q} --id {wildcards.area:q}"
        " --out {output:q} > {log:q} 2>&1"
