"""Inference sharded over processes: ``torchrun --nproc_per_node N -m napari_cellseg export|predict``.

Why no scheduler: torchrun starts the processes and torch.distributed gives each its rank, so
process ``r`` of ``N`` simply takes images ``r, r + N, r + 2N, ...`` (similar images cost similar
time, so the shares end together). Each process exports its share with ``pipeline.iter_export``
into its own shard file ``<out>.rank<r>-of-<N>.json`` (and its own resumable partial file), then
marks the shard finished; after a barrier rank 0 streams the shards, in the single-process image
order and byte for byte, into the one submission and removes them. A killed run started again
with the same N redoes no finished image on any rank: a finished shard is kept, a half-done one
resumes from its partial file; one made from other images, settings or weights is redone. A
different N starts over. Each rank holds a lock for the whole run (rank 0 also the output's), so a
second sharded run into the same ``--out`` is refused before it touches a shard.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import distributed
from ..atomic import atomic_path, output_lock, write_text_atomic
from ..distributed import Context, barrier, teardown
from ..model.checkpoint import weights_digest
from ..defaults import MASK_THRESH, SCORE_THRESH, TILE_SIZE
from ..errors import DatasetError
from .pipeline import ExportItem, iter_export
from ..progress import Progress, StopCheck

_CHUNK = 1 << 20


def setup_sharding(device: str = "auto") -> Context:
    """The torchrun process group (one GPU per process where there are GPUs), or a world of one."""
    return distributed.setup(device)


def my_share(items: Sequence, ctx: Context) -> list:
    """This process's share: every N-th item, starting at its rank."""
    return list(items[ctx.rank :: ctx.world_size])


_EXPORT_DEFAULTS = {"score_thresh": SCORE_THRESH, "mask_thresh": MASK_THRESH, "tile_size": TILE_SIZE, "tta": False,
                    "scale": "auto", "diameter": None}
"""``iter_export``'s settings when not given, so a shard's stamp names every setting it was made with."""


def shard_path(out_json: str | Path, rank: int, world_size: int) -> Path:
    out_json = Path(out_json)
    return out_json.with_name(f"{out_json.name}.rank{rank}-of-{world_size}.json")


def iter_sharded_export(
    model,
    items: Sequence[ExportItem],
    out_json: str | Path,
    ctx: Context,
    *,
    resume: bool = True,
    should_stop: StopCheck | None = None,
    **options: Any,
) -> Iterator[Progress]:
    """``iter_export`` over this process's share (``options``: its ``device``, ``score_thresh``,
    ``mask_thresh``, ``tile_size``, ``tta``, ``scale``, ``diameter``); yields ``Progress(done, share, name)``.
    Returns the number of results in the submission on rank 0, 0 on the other ranks, None when stopped early."""
    if ctx.world_size <= 1:
        return (yield from iter_export(model, items, out_json, resume=resume, should_stop=should_stop, **options))
    ids = [it.image_id for it in items]
    if len(set(ids)) != len(ids):
        raise DatasetError("two images share one image id; each image (or plane) needs its own id")
    with contextlib.ExitStack() as locks:  # one sharded run per output: a second one is refused at once
        locks.enter_context(output_lock(Path(f"{out_json}.rank{ctx.rank}-of-{ctx.world_size}")))
        if ctx.is_main:
            locks.enter_context(output_lock(out_json))
        count = yield from _sharded_export(model, items, out_json, ctx, resume, should_stop, options)
        if count is not None:
            barrier(ctx)  # every rank keeps its lock until rank 0 has merged the shards
        return count


def _sharded_export(model, items, out_json, ctx: Context, resume: bool, should_stop, options: dict[str, Any]):
    """This rank's shard (kept when finished with the same images, settings and weights), then rank 0 merges."""
    mine = my_share(items, ctx)
    shard = shard_path(out_json, ctx.rank, ctx.world_size)
    marker = shard.with_name(shard.name + ".done")
    stamp = _stamp(model, mine, options)
    if resume and shard.is_file() and marker.is_file() and marker.read_text(encoding="utf-8") == stamp:
        yield Progress(len(mine), len(mine), "(finished before)")
    else:
        marker.unlink(missing_ok=True)
        count = yield from iter_export(model, mine, shard, resume=resume, should_stop=should_stop, **options)
        if count is None:
            return None
        write_text_atomic(marker, stamp)
    barrier(ctx)  # every shard is finished
    if not ctx.is_main:
        return 0
    shards = [shard_path(out_json, r, ctx.world_size) for r in range(ctx.world_size)]
    for r, path in enumerate(shards):  # only shards of this run's images, settings and weights are merged
        marker = path.with_name(path.name + ".done")
        expected = stamp if r == ctx.rank else _stamp(model, items[r :: ctx.world_size], options)
        if not (path.is_file() and marker.is_file() and marker.read_text(encoding="utf-8") == expected):
            raise DatasetError(f"{path} is not a finished shard of this export (other images, settings or "
                               "model, or its rank did not finish); run the sharded export again")
    count = merge_shards(out_json, items, shards)
    for path in shards:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".done").unlink(missing_ok=True)
    return count


def merge_shards(out_json: str | Path, items: Sequence[ExportItem], shards: Sequence[Path]) -> int:
    """Stream the shards into one submission in item order (item ``n`` is in shard ``n % N``),
    copying each result's text as it is, so the file equals a single-process export byte for byte.
    Memory holds one chunk of each shard. Returns the number of results."""
    streams = [_Peek(_result_texts(path)) for path in shards]
    count = 0
    with atomic_path(out_json) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write("[")
        for n, item in enumerate(items):
            stream = streams[n % len(streams)]
            while stream.head is not None and stream.head[0] == item.image_id:
                out.write(("," if count else "") + stream.head[1])
                count += 1
                stream.advance()
        out.write("]")
    leftover = [str(path) for path, s in zip(shards, streams) if s.head is not None]
    if leftover:
        raise DatasetError(f"results out of order in {leftover[0]}; export again with --restart")
    return count


class _Peek:
    """An iterator whose next item can be looked at before it is taken."""

    def __init__(self, it: Iterator) -> None:
        self._it = it
        self.head = next(it, None)

    def advance(self) -> None:
        self.head = next(self._it, None)


def _result_texts(path: Path) -> Iterator[tuple[int, str]]:
    """(image_id, exact text) of each result of a results JSON list, read chunk by chunk."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buf, pos, eof = "", 0, False
        while True:
            while pos < len(buf) and buf[pos] in "[, \n\r\t":
                pos += 1
            if pos < len(buf) and buf[pos] == "]":
                return
            try:
                if pos >= len(buf):
                    raise json.JSONDecodeError("need more", buf, pos)
                obj, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                if eof:
                    raise DatasetError(f"{path} is not a complete results file; export again with --restart") from None
                chunk = f.read(_CHUNK)
                eof = not chunk
                buf, pos = buf[pos:] + chunk, 0
                continue
            yield obj["image_id"], buf[pos:end]
            pos = end


def _stamp(model, items: Sequence[ExportItem], options: dict[str, Any]) -> str:
    """What a finished shard was made from: its images, the settings and the weights' digest."""
    settings = {k: v for k, v in {**_EXPORT_DEFAULTS, **options}.items() if k != "device"}
    return json.dumps({"items": [[it.image_id, it.name] for it in items], **settings, "weights": weights_digest(model)})


__all__ = ["setup_sharding", "my_share", "shard_path", "iter_sharded_export", "merge_shards", "teardown"]
