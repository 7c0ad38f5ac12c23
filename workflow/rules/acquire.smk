checkpoint acquire_search:
    """Search Sentinel-1 IW GRDH products over a `source: download` area in the season
    windows of `year` (acquire.provider, the catalogue's filters) and record them with
    their URLs, sizes and checksums; nothing is downloaded. A checkpoint: the download jobs
    (one per product) are planned from its JSON. Prints the number of products and GB.
    """
    output:
        search="resources/download/{area}/search.json",
    log:
        "logs/acquire/{area}/search.log",
    wildcard_constraints:
        area=download_area_pattern(),
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        options=search_args,
        out_dir="resources/download/{area}/products",
    shell:
        "sarssl acquire sentinel1 {params.options} --dry-run --manifest {output.search:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"
        " && grep '^# ' {log:q} | sed 's|^#|{wildcards.area}:|' >&2"


rule acquire_product:
    """Download one product of an area's search: resumed from its `.part` file after an
    interruption (HTTP Range), verified (size, MD5) and renamed into place atomically.
    """
    input:
        search="resources/download/{area}/search.json",
    output:
        product="resources/download/{area}/products/{product}.zip",
    log:
        "logs/acquire/{area}/products/{product}.log",
    wildcard_constraints:
        area=download_area_pattern(),
        product=r"S1[A-D]_[A-Z0-9_]+",
    conda:
        "../envs/geo.yaml"
    threads: 1
    resources:
        downloads=1,
    params:
        options=product_download_args(),
    shell:
        "sarssl acquire product --search {input.search:q} --id {wildcards.product:q}"
        " --out {output.product:q} {params.options} > {log:q} 2>&1"


rule acquire_orbits:
    """POEORB (else RESORB) orbit files of every product of an area into
    resources/download/{area}/orbits/ (files already there are kept); the TSV lists the file
    chosen per product and is what preprocessing waits for."""
    input:
        products=downloaded_products,
    output:
        tsv="resources/download/{area}/orbits.tsv",
    log:
        "logs/acquire/{area}/orbits.log",
    wildcard_constraints:
        area=download_area_pattern(),
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        options=orbit_args,
        orbit_dir="resources/download/{area}/orbits",
    shell:
        "sarssl acquire orbits {input.products:q} --out-dir {params.orbit_dir:q}"
        " {params.options} > {output.tsv:q} 2> {log:q}"


rule acquire_dem:
    """Copernicus GLO-30 tiles over the area (plus acquire.dem_margin), mosaicked on the
    tiles' grid; heights above EGM2008, recorded as CRS EPSG:9518 and VERTICAL_DATUM."""
    output:
        dem="resources/download/{area}/dem.tif",
    log:
        "logs/acquire/{area}/dem.log",
    wildcard_constraints:
        area=download_area_pattern(),
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        options=dem_download_args,
    shell:
        "sarssl acquire dem {params.options} --out {output.dem:q} > {log:q} 2>&1"


rule acquire_worldcover:
    """ESA WorldCover (acquire.worldcover_year) tiles over the area, mosaicked; legend
    codes as published (sarssl.data.labels maps them to classes)."""
    output:
        landcover="resources/download/{area}/worldcover.tif",
    log:
        "logs/acquire/{area}/worldcover.log",
    wildcard_constraints:
        area=download_area_pattern(),
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        options=worldcover_download_args,
    shell:
        "sarssl acquire worldcover {params.options} --out {output.landcover:q}"
        " > {log:q} 2>&1"


rule acquire_treecover:
    """MOD44B Percent_Tree_Cover of the composite year over the area, mosaicked in the
    MODIS sinusoidal grid (LP DAAC HDF, or a GeoTIFF mirror: acquire.urls.modis_template).
    """
    output:
        treecover="resources/download/{area}/treecover.tif",
    log:
        "logs/acquire/{area}/treecover.log",
    wildcard_constraints:
        area=download_area_pattern(),
    conda:
        "../envs/geo.yaml"
    threads: 1
    params:
        options=treecover_download_args,
    shell:
        "sarssl acquire modis {params.options} --out {output.treecover:q} > {log:q} 2>&1"
