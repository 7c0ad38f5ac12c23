checkpoint catalogue:
    """List the products of an area and keep those covering its bbox inside the season
    windows of `year`, with the configured orbit direction, relative orbits and
    polarisations; products that are not valid IW GRD products, or are further copies of an
    acquisition, are listed with the reason in `{area}.rejected.csv`. A checkpoint: the
    scenes to preprocess are read from its CSV."""
    input:
        products=products_input,
    output:
        csv="results/catalogue/{area}.csv",
        rejected="results/catalogue/{area}.rejected.csv",
    log:
        "logs/catalogue/{area}.log",
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        filters=catalogue_args,
    shell:
        "sarssl catalogue {input.products:q} {params.filters} --out {output.csv:q}"
        " --rejected-out {output.rejected:q}"
        " > {log:q} 2>&1"
