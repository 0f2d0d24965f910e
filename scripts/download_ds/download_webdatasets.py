"""Download CLIP_benchmark webdatasets (``clip-benchmark/wds_*``) into ``<root>/datasets/wds/``.

    python scripts/download_ds/download_webdatasets.py --datasets wds/vtab/cifar10 \
        --splits train test --project_root DIR

See :mod:`sim_consistency.data.download`. Fails at once, with the folders to copy datasets
into by hand, when the Hugging Face hub cannot be reached.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for _entry

from _entry import run_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_main("sim_consistency.data.download"))
