"""Download CLIP_benchmark webdatasets (``clip-benchmark/wds_*``) into ``<root>/datasets/wds/``.

    python scripts/download_ds/download_webdatasets.py --datasets wds/vtab/cifar10 \
        --splits train test --project_root DIR

See :mod:`sim_consistency.data.download`. Fails at once, with the folders to copy datasets
into by hand, when the Hugging Face hub cannot be reached.
"""

from sim_consistency.data import download

raise SystemExit(download.main())
