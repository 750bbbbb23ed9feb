"""Files on disk: output naming, atomic writes and batches, for the CLI and for scripts.

Outputs are written to a temporary file in the destination folder and moved into place only
when complete, so an interrupted run never leaves a partial file. Without `force`, an existing
output is never replaced (the final step is a hard link, which fails if the name exists), and a
batch skips inputs whose output exists, so rerunning an interrupted batch finishes it. A
temporary file carries its writer's process id; one left by a killed process is removed the
next time its output is written.
"""

from __future__ import annotations

import glob
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .errors import InputError, OutputError, VaecodecError

TEMPORARY_SUFFIX = ".partial"


@dataclass
class FileResult:
    """The outcome of one file of a batch."""

    source: Path
    output: Path | None
    ok: bool
    message: str = ""
    input_bytes: int = 0
    output_bytes: int = 0
    skipped: bool = False     # the output existed and was left alone


def write_atomically(path: Path, write: Callable[[Path], None], force: bool = False) -> None:
    """Call `write(temporary_path)`, then move the result to `path` in one step."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputError(f"{path}: exists (use --force to overwrite)")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{folder}: no such folder")
    remove_stale_temporaries(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.",
                                             suffix=TEMPORARY_SUFFIX, dir=folder)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror})") from None
    os.close(handle)
    temporary = Path(temporary)
    try:
        write(temporary)
        # mkstemp creates the file readable by its owner only; give it the usual permissions.
        os.chmod(temporary, 0o666 & ~current_umask())
        if force:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise OutputError(f"{path}: exists (use --force to overwrite)") from None
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        temporary.unlink(missing_ok=True)


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of `path` whose writing process no longer exists (it was killed)."""
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*{TEMPORARY_SUFFIX}"):
        pid = candidate.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not process_exists(int(pid)):
            candidate.unlink(missing_ok=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True       # it exists, but belongs to someone else
    return True


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_path(source: Path, suffix: str, output: Path | None, directory: Path | None) -> Path:
    """Where a file's output goes: `output` if given, else in `directory`, else beside it."""
    if output is not None:
        return Path(output)
    name = source.with_suffix(suffix).name
    return (Path(directory) if directory is not None else source.parent) / name


def _run_batch(inputs: Iterable, suffix: str, convert: Callable[[Path, Path], str | None],
               output: Path | None, directory: Path | None, progress: bool,
               force: bool) -> list[FileResult]:
    sources = [Path(p) for p in inputs]
    if output is not None and len(sources) != 1:
        raise InputError("-o names one output; use -d DIR for several inputs")
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
    iterator = sources
    if progress and len(sources) > 1:
        from tqdm import tqdm

        iterator = tqdm(sources, unit="file", leave=False)
    results = []
    for source in iterator:
        target = output_path(source, suffix, output, directory)
        try:
            if source.resolve() == target.resolve():
                raise OutputError(f"{target}: output would replace its input")
            if target.exists() and not force:
                results.append(FileResult(source, target, True, skipped=True,
                                          message=f"{target}: exists, skipped (--force replaces it)"))
                continue
            note = convert(source, target) or ""
            results.append(FileResult(source, target, True, note,
                                      source.stat().st_size, target.stat().st_size))
        except VaecodecError as error:
            results.append(FileResult(source, target, False, str(error)))
    return results


def compress_files(inputs, quality: float = 4.0, output: Path | None = None,
                   directory: Path | None = None, force: bool = False, device: str = "cpu",
                   progress: bool = False, **options) -> list[FileResult]:
    """Compress image files to `.vae` files, one result per input; a failed file does not stop
    the others. Inputs whose output exists are skipped (result `skipped`) unless `force`."""
    from .codec import compress

    def convert(source: Path, target: Path) -> None:
        data = compress(source, quality=quality, device=device, **options)
        write_atomically(target, lambda temporary: temporary.write_bytes(data), force)
        if any(options.get(k) is not None for k in ("target_size", "target_bpp", "target_psnr")):
            from .format import describe

            return f", quality {describe(data)['quality']:g}"
        return ""

    return _run_batch(inputs, ".vae", convert, output, directory, progress, force)


def decompress_files(inputs, output: Path | None = None, directory: Path | None = None,
                     force: bool = False, device: str = "cpu", progress: bool = False,
                     **options) -> list[FileResult]:
    """Decode `.vae` files to images (PNG unless the output name says otherwise)."""
    from .codec import decompress
    from .imageio import save_image

    def convert(source: Path, target: Path) -> None:
        image = decompress(read_bytes(source), device=device, **options)
        write_atomically(target, lambda temporary: save_image(image, temporary, target.suffix),
                         force)

    return _run_batch(inputs, ".png", convert, output, directory, progress, force)


def read_bytes(path: Path) -> bytes:
    """A file's bytes, with a `VaecodecError` instead of an OSError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
