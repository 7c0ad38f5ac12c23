checkpoint catalogue:
    """List the products of an area and keep those covering its bbox inside the season
    windows of `year`, with the configured orbit direction, relative orbits and
    polarisations. A checkpoint: the scenes to preprocess are read from its CSV."""
    input:
        products=products_input,
    output:
        csv="results/catalogue/{area}.csv",
    log:
        "logs/catalogue/{area}.log",
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        filters=catalogue_args,
    shell:
        "sarssl catalogue {input.products} {params.filters} --out {output.csv}"
        " > {log} 2>&1"
