"""copick projects (the optional ``copick`` package: ``pip install napari-ktal[copick]``).

PICKS is the project's configuration JSON. Every picks file of every run is read (or those of
``--copick-user``, ``--copick-session``, ``--copick-objects``), in run, object, user, session
order. A point's position is copick's ``full_positions()``: its location plus the translation
of its transform, in Angstrom from the first voxel's centre (copick's tomogram centre is
``shape / 2 * voxel_size``, as RELION 5's; voxel ``i`` is at ``i * voxel_size``). A pick's class
is its object's name; its tomogram is its run's name: matched in ``--tomograms``, or, without
it, the run's own tomogram (OME-Zarr, level 0; ``--copick-voxel-size`` and
``--copick-tomo-type``, by default the finest voxel spacing that has one and its first type).

Written back (:func:`write_classes`): one picks file per class and run, under
``--copick-user`` / ``--copick-session`` (default: the source's user, session ``ktal``), each
point with its location and transform as read. A class the project has and the copick
configuration lacks is added to it as a particle object. Picks files the list was read from are
never overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...atomic import atomic_write_text
from ...errors import InputError
from ..tomograms import ZarrTomogram
from .base import ANGSTROM, Convention, PickList, PickOptions

DEFAULT_SESSION = "ktal"


def is_copick_config(path: Path) -> bool:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ("pickable_objects" in data or "config_type" in data)


def _root(path: Path):
    try:
        import copick
    except ImportError:
        raise InputError(path, "is a copick project, but the copick package is not installed",
                         "pip install 'napari-ktal[copick]'") from None
    try:
        return copick.from_file(str(path))
    except Exception as err:  # noqa: BLE001 (pydantic, fsspec, json: a broken configuration)
        raise InputError(path, f"is not a usable copick configuration ({type(err).__name__}: {err})") from err


def read(path: Path, options: PickOptions) -> PickList:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    root = _root(path)
    names, coords, classes, ids, rows, locations, transforms = [], [], [], [], [], [], []
    for run in sorted(root.runs, key=lambda r: r.name):
        picks_files = run.get_picks(object_name=options.copick_objects, user_id=options.copick_user,
                                    session_id=options.copick_session)
        for picks in sorted(picks_files, key=lambda p: (p.pickable_object_name, p.user_id, p.session_id)):
            if not picks.points:
                continue
            points, transform = picks.numpy()
            full = picks.full_positions()
            for k in range(len(points)):
                names.append(run.name)
                coords.append(full[k])
                classes.append(picks.pickable_object_name)
                ids.append(f"{run.name}/{picks.pickable_object_name}/{picks.user_id}/{picks.session_id}#{k + 1}")
                rows.append([run.name, picks.pickable_object_name, picks.user_id, picks.session_id, k])
            locations.append(points)
            transforms.append(transform)
    extra = {"rows": rows,
             "locations": np.concatenate(locations).tolist() if locations else [],
             "transforms": np.concatenate(transforms).tolist() if transforms else [],
             "config": str(path)}
    return PickList(path, "copick", names, np.array(coords, np.float64).reshape(-1, 3), Convention(ANGSTROM),
                    classes=classes or None, row_ids=ids, files=[], extra=extra)


def run_tomogram(config: Path, run_name: str, options: PickOptions) -> ZarrTomogram:
    """The run's own tomogram (level 0 of its OME-Zarr), opened lazily."""
    root = _root(config)
    run = root.get_run(run_name)
    if run is None:
        raise InputError(config, f"has no run {run_name!r}")
    spacings = [v for v in run.voxel_spacings if v.tomograms]
    if options.copick_voxel_size is not None:
        spacings = [v for v in spacings if abs(v.voxel_size - options.copick_voxel_size) < 1e-3]
    if not spacings:
        raise InputError(config, f"run {run_name!r} has no tomogram"
                                 + (f" at voxel size {options.copick_voxel_size:g} A" if options.copick_voxel_size
                                    else ""), "pass --tomograms with the tomogram files")
    spacing = min(spacings, key=lambda v: v.voxel_size)
    tomograms = spacing.tomograms
    if options.copick_tomo_type:
        tomograms = [t for t in tomograms if t.tomo_type == options.copick_tomo_type]
        if not tomograms:
            raise InputError(config, f"run {run_name!r} has no tomogram of type {options.copick_tomo_type!r}")
    tomogram = tomograms[0]
    import zarr

    try:
        array = zarr.open(tomogram.zarr(), mode="r")["0"]
    except Exception as err:  # noqa: BLE001
        raise InputError(config, f"run {run_name!r}: its tomogram {tomogram.tomo_type!r} cannot be read ({err})") \
            from err
    if len(array.shape) != 3:
        raise InputError(config, f"run {run_name!r}: tomogram {tomogram.tomo_type!r} is not 3D")
    return ZarrTomogram(run_name, array, spacing.voxel_size, f"{config}:{run_name}/{tomogram.tomo_type}")


def write_classes(config: Path, rows: list, locations: np.ndarray, transforms: np.ndarray, labels: list[str | None],
                  *, user: str | None, session: str | None) -> list[str]:
    """One picks file per (run, class) under ``user``/``session``; returns what it wrote (for the user)."""
    root = _root(config)
    sources = {(r[0], r[1], r[2], r[3]) for r in rows}
    users = {r[2] for r in rows}
    user = user or (next(iter(users)) if len(users) == 1 else "napari-ktal")
    session = session or DEFAULT_SESSION
    wanted: dict[tuple[str, str], list[int]] = {}
    for i, label in enumerate(labels):
        if label is not None:
            wanted.setdefault((rows[i][0], label), []).append(i)
    clash = sorted((run, obj) for run, obj in wanted if (run, obj, user, session) in sources)
    if clash:
        run, obj = clash[0]
        raise InputError(config, f"exporting under user {user!r}, session {session!r} would overwrite the picks "
                                 f"of {obj!r} in run {run!r} that the project was made from",
                         "choose another --copick-session")
    objects = {o.name for o in root.pickable_objects}
    added = sorted({obj for _, obj in wanted} - objects)
    for name in added:
        root.new_object(name, is_particle=True)
    if added:
        atomic_write_text(config, json.dumps(root.config.model_dump(), indent=4))
    written = []
    for (run_name, obj), idx in sorted(wanted.items()):
        run = root.get_run(run_name)
        if run is None:
            raise InputError(config, f"has no run {run_name!r} any more")
        picks = run.new_picks(object_name=obj, session_id=session, user_id=user, exist_ok=True)
        picks.from_numpy(np.asarray(locations)[idx], np.asarray(transforms)[idx])
        written.append(f"{run_name}/{obj}: {len(idx)}")
    return (["added object(s) " + ", ".join(added) + " to the configuration"] if added else []) + written
