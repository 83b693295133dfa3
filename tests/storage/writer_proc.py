"""A writer process for crash and concurrency tests: commits clips `clip-<i>` for the given indices."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2]))

from clip_factory import random_clip  # noqa: E402

from storage import LabelStore  # noqa: E402


def main(store_path: str, first: int, last: int, size: str) -> None:
    T, H, W = (int(x) for x in size.split("x"))
    store = LabelStore.create(store_path)
    for i in range(first, last):
        clip_id = f"clip-{i:03d}"
        if store.has_clip(clip_id):
            continue
        arrays, attrs = random_clip(T=T, H=H, W=W, seed=i)
        store.commit(clip_id, arrays, attrs)
        print(f"committed {clip_id}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
