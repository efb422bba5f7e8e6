"""What vpskit reads from an app's sources before it builds anything: the package manager (from the lock
file), the Payload migrations it bundles and whether it applies them itself (`prodMigrations`), where its
upload collections write, the Node version it asks for, and what reads Payload while it builds. Pure file
reading; every finding is a field of one frozen `AppInfo`.

    info = app_info.inspect(Path("example"))     # raises SettingsError naming the problem and the fix
    info.package_manager.install                  # "pnpm install --frozen-lockfile"
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vpskit import body_limit, jobs, node_version
from vpskit.node_version import NodeWant
from vpskit.settings import SettingsError

LOCK_FILES = {"package-lock.json": "npm", "pnpm-lock.yaml": "pnpm", "yarn.lock": "yarn"}
# Files a package manager reads at install time, copied next to the lock file when the app has them.
INSTALL_FILES = (".npmrc", ".yarnrc", ".yarnrc.yml", "pnpm-workspace.yaml", ".pnpmfile.cjs", "patches")
DEFAULT_VERSIONS = {"pnpm": "10", "yarn": "1", "yarn-berry": "4"}
APP_ROOT = "/app"  # the standalone server's working directory in the image
MEDIA_DIR = "/data/media"  # where the media volume is mounted; the app gets it as MEDIA_DIR
CACHE_HANDLER = re.compile(r"\bcacheHandler\s*:")  # next.config's own cache handler (not cacheHandlers)


@dataclass(frozen=True)
class PackageManager:
    """How the image installs dependencies and runs scripts with the app's own package manager."""

    name: str  # npm, pnpm or yarn
    lock_file: str
    version: str = ""  # "" = the one in the node image (npm)
    berry: bool = False  # Yarn 2+

    @property
    def setup(self) -> str:
        """The shell command that puts the package manager into the node image ("" when it is there)."""
        if self.name == "npm":
            return ""
        package = "@yarnpkg/cli-dist" if self.berry else self.name
        # --force: official node images carry a yarn 1 binary that a global install must replace.
        return f"npm install -g --force --no-audit --no-fund {package}@{self.version}"

    @property
    def install(self) -> str:
        """Installs exactly the lock file, then drops the download cache in the same layer: this stage is kept
        as the next build's cache (yarn's cache alone doubled it to 4 GB)."""
        return {
            "npm": "npm ci --no-audit --no-fund && npm cache clean --force",
            "pnpm": "pnpm install --frozen-lockfile --store-dir /tmp/pnpm-store && rm -rf /tmp/pnpm-store",
            "yarn": ("yarn install --immutable && yarn cache clean --all" if self.berry else
                     # yarn 1 gives up on a tarball after 30 s by default: a busy proxy or a slow
                     # link breaks the build (seen here on a large package); Payload has hundreds.
                     "yarn install --frozen-lockfile --non-interactive --network-timeout 600000 "
                     "&& yarn cache clean"),
        }[self.name]

    def run(self, script: str) -> str:
        return f"{self.name} run {script}"

    def __str__(self) -> str:
        label = f"{self.name} {self.version}" if self.version else self.name
        return f"{label} ({self.lock_file})"


@dataclass(frozen=True)
class AppInfo:
    package_manager: PackageManager
    install_files: tuple[str, ...]  # INSTALL_FILES the app has
    migrations: tuple[str, ...]  # names of the Payload migrations it bundles, in order
    prod_migrations: bool  # the app applies its migrations itself at boot (postgresAdapter prodMigrations)
    upload_dirs: tuple[str, ...]  # absolute paths in the container where upload collections write
    node: NodeWant = NodeWant()  # the Node version it asks for (engines.node, .nvmrc, .node-version)
    # Where things are, relative to the app's root (the migration route vpskit adds to the build imports them).
    app_dir: str = "src/app"  # Next.js's app router folder
    config: str = "src/payload.config.ts"
    migrations_dir: str = "src/migrations"  # Payload's migrationDir, with its index.ts
    build_reads: tuple[str, ...] = ()  # files that read Payload while `next build` renders them (build_reads())
    upload_limit: int = 0  # Payload's upload.limits.fileSize in bytes (0: none set), for the proxy's body limit
    jobs: jobs.Jobs = jobs.Jobs()  # what it asks of Payload's jobs queue (vpskit/jobs.py)
    own_cache_handler: bool = False  # its next.config sets cacheHandler (then vpskit's shared one is not added)

    @property
    def migrated_by_vpskit(self) -> bool:
        """vpskit applies the migrations before traffic (the app does not do it at boot)."""
        return bool(self.migrations) and not self.prod_migrations

    def context(self, app_name: str, version: str) -> dict:
        """What the Dockerfile and compose templates need from the app."""
        return {"pm": self.package_manager, "install_files": self.install_files, "migrations": self.migrations,
                "upload_dirs": self.upload_dirs,
                "migrate_image": migrate_image(app_name, version) if self.migrated_by_vpskit else ""}


def migrate_image(app_name: str, version: str) -> str:
    """The image of the one-shot container that applies the migrations of `version`: the version's own app image
    (its server applies them through the route vpskit adds to the build, vpskit/migrate_runner.py), so a
    release with migrations ships nothing more than the app."""
    return f"{app_name}:{version}"


def package_manager(app_path: Path, wanted: str = "") -> PackageManager:
    """The package manager of the app's lock file; `wanted` picks one when the app has several lock files."""
    found = {lock: pm for lock, pm in LOCK_FILES.items() if (app_path / lock).exists()}
    if wanted:
        lock = next((lk for lk, pm in LOCK_FILES.items() if pm == wanted), "")
        if lock not in found:
            raise SettingsError(f"package_manager={wanted!r} but {app_path} has no {lock}: run `{wanted} install` "
                                "and commit the lock file, or set package_manager to match the lock file you have")
    elif not found:
        raise SettingsError(f"{app_path} has no lock file (package-lock.json, pnpm-lock.yaml or yarn.lock): run "
                            "`npm install`, `pnpm install` or `yarn install` and commit the lock file it writes")
    elif len(found) > 1:
        names = " and ".join(found)
        choices = " or ".join(f'"{pm}"' for pm in found.values())
        raise SettingsError(f"{app_path} has {len(found)} lock files ({names}): which package manager builds it? "
                            f"set package_manager = {choices} (group_data or --data), or delete the other lock file")
    else:
        lock, wanted = next(iter(found.items()))
    lock = next(lk for lk, pm in LOCK_FILES.items() if pm == wanted)
    if wanted == "npm":
        return PackageManager("npm", lock)
    berry = wanted == "yarn" and "__metadata:" in (app_path / lock).read_text(errors="replace")[:4000]
    declared = _declared_version(app_path, wanted)
    version = declared or DEFAULT_VERSIONS["yarn-berry" if berry else wanted]
    if berry and "nodeLinker: node-modules" not in _read(app_path / ".yarnrc.yml"):
        raise SettingsError(f"{app_path}/.yarnrc.yml does not set nodeLinker: node-modules: Next.js's standalone "
                            "output needs a node_modules folder; add that line and run `yarn install`")
    return PackageManager(wanted, lock, version, berry)


def _declared_version(app_path: Path, name: str) -> str:
    """The version in package.json's "packageManager" field (corepack's "pnpm@10.12.1+sha512...")."""
    try:
        field = json.loads((app_path / "package.json").read_text()).get("packageManager", "")
    except (ValueError, AttributeError):
        return ""
    pm, _, version = str(field).partition("@")
    return version.split("+", 1)[0] if pm == name else ""


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _code(text: str) -> str:
    """The text without // and /* */ comments (good enough for config files)."""
    return re.sub(r"/\*.*?\*/|(?<![:\"'])//[^\n]*", "", text, flags=re.S)


# --- What reads Payload while `next build` renders the pages

SOURCE_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mjs")
READS_PAYLOAD = re.compile(r"\bgetPayload\s*\(")
IMPORT = re.compile(r"""(?:from|import)\s*\(?\s*['"]((?:@/|\.\.?/)[^'"]+)['"]""")
DYNAMIC = re.compile(r"""\bexport\s+const\s+dynamic\s*=\s*['"]force-dynamic['"]"""
                     r"|\b(?:headers|cookies|connection)\s*\(")
STATIC_PARAMS = re.compile(r"\bgenerateStaticParams\b")


def _module(app_path: Path, importer: Path, spec: str) -> Path | None:
    """The app's own file an import names (`@/utilities/x` is src/utilities/x; ./x next to the importer)."""
    base = (app_path / "src" / spec[2:]) if spec.startswith("@/") else (importer.parent / spec)
    stem = base.with_suffix("") if base.suffix in (".js", ".mjs") else base  # ESM-style "./x.js" for x.ts
    for candidate in (base, *(stem.with_name(stem.name + s) for s in SOURCE_SUFFIXES),
                      *(stem / f"index{s}" for s in SOURCE_SUFFIXES)):
        if candidate.is_file():
            return candidate
    return None


def _reads_payload(app_path: Path, path: Path, depth: int, seen: set) -> bool:
    """The file calls getPayload, or an app file it imports does (followed `depth` imports deep)."""
    if path in seen:
        return False
    seen.add(path)
    text = _code(_read(path))
    if READS_PAYLOAD.search(text):
        return True
    return depth > 0 and any(m is not None and _reads_payload(app_path, m, depth - 1, seen)
                             for m in (_module(app_path, path, spec) for spec in IMPORT.findall(text)))


def build_reads(app_path: Path, app_dir: Path | None) -> tuple[str, ...]:
    """The files of the app router that read Payload while `next build` renders them: a page, layout or other
    file outside Payload's own `(payload)` group and outside `api/` that calls getPayload (itself, or an app file
    it imports, up to three imports deep: a layout's Header component's getCachedGlobal) and is static (no
    `dynamic = 'force-dynamic'`, no headers()/cookies()/connection()), or that lists its pages with
    generateStaticParams (run at build time whatever the page's rendering)."""
    if app_dir is None or not app_dir.is_dir():
        return ()
    found = []
    for path in sorted(app_dir.rglob("*")):
        rel = path.relative_to(app_dir).parts
        if path.suffix not in SOURCE_SUFFIXES or "(payload)" in rel or "api" in rel or rel[-1].startswith("route."):
            continue
        text = _code(_read(path))
        if (STATIC_PARAMS.search(text) or not DYNAMIC.search(text)) and _reads_payload(app_path, path, 3, set()):
            found.append(path.relative_to(app_path).as_posix())
    return tuple(found)


MIGRATION_DIR = re.compile(r"""migrationDir\s*:\s*path\.(?:resolve|join)\(\s*(?:__)?dirname\s*,\s*['"]([^'"]+)['"]""")


def migrations(app_path: Path, config: Path) -> tuple[tuple[str, ...], bool, Path]:
    """(the migration names the app bundles, whether the config sets prodMigrations, their folder). Payload's own
    rule: every .ts/.js file of the migration folder except index, by name."""
    text = _code(config.read_text())
    found = MIGRATION_DIR.search(text)
    if found:
        folder = (config.parent / found.group(1)).resolve()
    else:  # Payload's default: src/migrations, else migrations, from the app's root
        folder = next((d for d in (app_path / "src" / "migrations", app_path / "migrations") if d.is_dir()),
                      app_path / "src" / "migrations")
    names = sorted(p.stem for p in folder.glob("*") if p.suffix in (".ts", ".js") and not p.name.endswith(".d.ts")
                   and p.stem != "index") if folder.is_dir() else []
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SettingsError(f"{folder / name}: migration names may hold letters, digits, '_', '-' and '.' only; "
                                "rename the file (and its entry in index.ts)")
    return tuple(names), bool(re.search(r"\bprodMigrations\s*:", text)), folder


UPLOAD = re.compile(r"\bupload\s*:\s*(true|\{)")
SLUG = re.compile(r"""\bslug\s*:\s*['"]([^'"]+)['"]""")
STATIC_DIR = re.compile(r"""\bstaticDir\s*:\s*([^\n]+)""")


def _expression(text: str) -> str:
    """The expression at the start of `text`, up to the first , or } outside brackets."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0 or (depth == 0 and ch == ","):
            return text[:i].strip()
    return text.strip()


def upload_dirs(app_path: Path) -> tuple[str, ...]:
    """Where the app's upload collections write inside the container. Payload resolves a relative staticDir
    (default: the collection's slug) from the server's working directory, /app in the image."""
    dirs = []
    src = app_path / "src" if (app_path / "src").is_dir() else app_path
    for path in sorted(src.rglob("*.ts")):
        if "node_modules" in path.parts or not UPLOAD.search(text := _code(path.read_text(errors="replace"))):
            continue
        slug = SLUG.search(text)
        static = STATIC_DIR.search(text)
        if static is None:
            if slug:
                dirs.append(f"{APP_ROOT}/{slug.group(1)}")
            continue
        value = _expression(static.group(1))
        literal = re.fullmatch(r"""['"]([^'"]+)['"]""", value)
        if literal:
            where = literal.group(1).removeprefix("./").rstrip("/")
            dirs.append(where if where.startswith("/") else f"{APP_ROOT}/{where}")
        elif "MEDIA_DIR" not in value:
            rel = path.relative_to(app_path)
            raise SettingsError(f"{rel}: staticDir {value} is resolved where the app was built, not where it runs "
                                "(the image's /app is read-only): write `staticDir: process.env.MEDIA_DIR || "
                                f"{value}` (vpskit mounts the backed-up media volume at {MEDIA_DIR}), "
                                "or drop staticDir")
    return tuple(dict.fromkeys(d for d in dirs if d != MEDIA_DIR))


def inspect(app_path: Path, config: Path, wanted_package_manager: str = "", app_dir: Path | None = None) -> AppInfo:
    pm = package_manager(app_path, wanted_package_manager)
    names, prod, folder = migrations(app_path, config)
    extra = tuple(f for f in INSTALL_FILES if (app_path / f).exists())

    def rel(path: Path) -> str:  # "" when outside the app (then not in the build context either)
        try:
            return path.resolve().relative_to(app_path.resolve()).as_posix()
        except ValueError:
            return ""

    return AppInfo(pm, extra, names, prod, upload_dirs(app_path), node_version.read(app_path),
                   rel(app_dir or app_path / "src" / "app"), rel(config), rel(folder), build_reads(app_path, app_dir),
                   body_limit.upload_limit(config.read_text()), jobs.read(app_path, config, _code))
