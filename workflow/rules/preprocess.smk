rule preprocess:
    """Raw GRD product -> calibrated, speckle-filtered, terrain-corrected dB GeoTIFF on the
    area grid (orbit, thermal noise and border noise removal, calibration, optional
    terrain flattening, speckle filter, range-Doppler terrain correction)."""
    input:
        product=preprocess_product,
        dem=dem_input,
    output:
        scene="results/preprocessed/{area}/{scene}.tif",
        mask="results/preprocessed/{area}/{scene}.mask.tif",
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
