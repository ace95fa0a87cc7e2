"""Does the layer's lock file still agree with its requirements? (`python -m bulwark_dev.layer_lock`)

The Lambda layer installs from ``layers/bulwark/requirements.lock`` with ``--require-hashes``: every file pinned by
version and sha256. ``requirements.txt`` says what the layer needs; the lock, generated from it by ``./dev lock``
(``uv pip compile --generate-hashes`` for Python 3.13 on manylinux2014 aarch64), says exactly which files. This check
is offline: it reads both files and fails when they drift apart:

- a requirement has no pin in the lock, or its pin is outside the requirement's range;
- a pin is not hashed, or pins something other than one exact version;
- the lock names as direct a package that requirements.txt no longer lists, or keeps a package nothing pulls in.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REGENERATE = "./dev lock"
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>\S+?)\s*(?:\\)?$")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass
class Pin:
    name: str
    version: str
    hashes: int = 0
    via: set[str] = field(default_factory=set)  # canonical names, or "-r" for requirements.txt itself


def read_requirements(text: str) -> dict[str, Requirement]:
    """requirements.txt by canonical name (comments and blank lines ignored; options are not expected here)."""
    found: dict[str, Requirement] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def read_lock(text: str) -> tuple[dict[str, Pin], list[str]]:
    """The pins of a uv/pip-compile lock by canonical name, with their hashes and their `# via` parents."""
    pins: dict[str, Pin] = {}
    problems: list[str] = []
    current: Pin | None = None
    in_via = False
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            continue
        if not raw[0].isspace() and not stripped.startswith("#"):
            in_via = False
            match = _PIN.match(stripped)
            if match is None:
                problems.append(f"not an exact pin: {stripped!r}")
                current = None
                continue
            current = Pin(canonicalize_name(match["name"]), match["version"])
            pins[current.name] = current
            continue
        if current is None:
            continue  # the header
        current.hashes += len(_HASH.findall(stripped))
        if stripped.startswith("# via"):
            rest = stripped[len("# via") :].strip()
            in_via = not rest
            if rest:
                current.via.add(_via_name(rest))
        elif in_via and stripped.startswith("#"):
            current.via.add(_via_name(stripped.lstrip("#").strip()))
    return pins, problems


def _via_name(entry: str) -> str:
    return "-r" if entry.startswith("-r ") else canonicalize_name(entry.split(maxsplit=1)[0])


def check(requirements_text: str, lock_text: str) -> list[str]:
    """Every way the lock disagrees with requirements.txt; empty when they agree."""
    try:
        wanted = read_requirements(requirements_text)
    except InvalidRequirement as exc:
        return [f"requirements.txt: {exc}"]
    pins, problems = read_lock(lock_text)
    return problems + _unmet(wanted, pins) + _unhashed_or_stale(wanted, pins)


def _unmet(wanted: dict[str, Requirement], pins: dict[str, Pin]) -> list[str]:
    """Requirements without a pin, with a pin outside their range, or locked only as someone's dependency."""
    problems: list[str] = []
    for name, requirement in sorted(wanted.items()):
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{requirement} is not in the lock")
            continue
        try:
            version = Version(pin.version)
        except InvalidVersion:
            problems.append(f"{name}=={pin.version} is not a valid version")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{name}=={pin.version} does not satisfy {requirement}")
        if "-r" not in pin.via:
            problems.append(f"{name} is required directly but the lock has it only as a dependency of others")
    return problems


def _unhashed_or_stale(wanted: dict[str, Requirement], pins: dict[str, Pin]) -> list[str]:
    """Pins without a hash, direct pins requirements.txt dropped, and pins nothing pulls in any more."""
    problems: list[str] = []
    for name, pin in sorted(pins.items()):
        if pin.hashes == 0:
            problems.append(f"{name}=={pin.version} has no --hash")
        if "-r" in pin.via and name not in wanted:
            problems.append(f"{name}=={pin.version} is locked as a requirement but requirements.txt does not list it")
    # Walk down from the requirements through the `via` links; what is not reached is stale.
    reached = {name for name in wanted if name in pins}
    grew = True
    while grew:
        grew = False
        for name, pin in pins.items():
            if name not in reached and pin.via & reached:
                reached.add(name)
                grew = True
    for name in sorted(set(pins) - reached):
        if name not in wanted and "-r" not in pins[name].via:
            problems.append(f"{name}=={pins[name].version} is locked but no requirement pulls it in")
    return problems


def check_pair(requirements: Path) -> tuple[list[str], int]:
    """The problems of one requirements file's lock (same name, `.lock`), and how many packages it pins."""
    lock = requirements.with_suffix(".lock")
    if not lock.exists():
        return [f"no {lock}: generate it with `{REGENERATE}`"], 0
    problems = check(requirements.read_text(), lock.read_text())
    if problems:
        return [f"{lock} disagrees with {requirements}:", *(f"  {p}" for p in problems)], 0
    return [], len(read_lock(lock.read_text())[0])


def main(argv: list[str] | None = None) -> int:
    """Checks every `requirements*.txt` in the layer source folder (one per layer) against its lock."""
    args = argv if argv is not None else sys.argv[1:]
    folder = Path(args[0]) if args else Path("layers/bulwark")
    pairs = sorted(folder.glob("requirements*.txt"))
    if not pairs:
        print(f"no requirements*.txt in {folder}")
        return 1
    failed = False
    counts = []
    for requirements in pairs:
        problems, pinned = check_pair(requirements)
        for line in problems:
            print(line)
        failed |= bool(problems)
        counts.append(f"{requirements.with_suffix('.lock').name}: {pinned}")
    if failed:
        print(f"regenerate with `{REGENERATE}` (see docs/DEPLOY.md)")
        return 1
    print(f"packages pinned with hashes, agreeing with their requirements ({', '.join(counts)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
