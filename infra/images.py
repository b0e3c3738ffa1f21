"""The images: every sandbox image and the app image, built on the Docker host (no registry).

Languages are discovered from ``app/languages/*.json`` with the app's own loader, so adding a
language (a JSON file plus ``sandbox_images/<name>/Dockerfile``) adds its image here with no
change to this program. Each sandbox image is built like ``python -m app.images build``: its
Dockerfile with ``sandbox_images/`` as context (every image gets the same agent), tagged with
the language's ``image``. With ``build=False`` the same names are pulled from a registry instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_docker as docker

from app.images import base_build, unit_build
from app.languages import Registry

ROOT = Path(__file__).resolve().parent.parent
# What the root Dockerfile's build sees: the .dockerignore allowlist plus the two build files.
APP_CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "app")
SKIPPED_PARTS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})


@dataclass(frozen=True)
class SandboxImage:
    """One unit's sandbox image (a version of a language): its tag, its Dockerfile and the base it builds on."""

    language: str  # the unit's key
    image: str
    dockerfile: Path
    args: dict[str, str]  # build arguments: TAG, BASE and the unit's own
    base: str  # the shared base it starts from, built first


def discover_sandbox_images(languages_dir: Path, context: Path) -> list[SandboxImage]:
    """Every language JSON's image, checked: one Dockerfile per language, no tag used twice."""
    found: list[SandboxImage] = []
    tags: dict[str, str] = {}
    for language in Registry.load(directory=languages_dir):
        dockerfile = context / language.dockerfile / "Dockerfile"
        if not dockerfile.is_file():
            raise FileNotFoundError(f"language {language.key!r} has no {dockerfile}")
        build = unit_build(language, context)
        if language.image in tags:
            raise ValueError(f"languages {tags[language.image]!r} and {language.key!r} both use {language.image}")
        tags[language.image] = language.key
        found.append(SandboxImage(language.key, language.image, dockerfile, build.args, build.base))
    if not found:
        raise FileNotFoundError(f"no language definitions in {languages_dir}")
    return found


def _files(root: Path, entries: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        path = root / entry
        if path.is_dir():
            files.extend(
                p
                for p in path.rglob("*")
                if p.is_file() and not SKIPPED_PARTS.intersection(p.parts) and p.suffix != ".pyc"
            )
        elif path.is_file():
            files.append(path)
    return sorted(files)


def context_hash(root: Path, entries: Iterable[str]) -> str:
    """A digest of the named files and directories (paths, exec bits and contents) under ``root``."""
    digest = hashlib.sha256()
    for path in _files(root, entries):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def app_context_hash(root: Path = ROOT) -> str:
    """Digest of what the app image is built from; it changes exactly when a rebuild could."""
    return context_hash(root, APP_CONTEXT)


@dataclass
class ImagesArgs:
    """Inputs of :class:`Images`."""

    app_image: str = "runbox/app:latest"
    languages_dir: Path = ROOT / "app" / "languages"
    sandbox_context: Path = ROOT / "sandbox_images"
    root: Path = ROOT
    build: bool = True  # False: pull app_image and every sandbox image from their registries
    sandboxes: bool = True  # False: only the app image (a host without executors)
    by_digest: bool = False  # containers refer to the app image by its content id, not its tag
    app_build_args: Mapping[str, str] = field(default_factory=dict)
    platform: str | None = None


class Images(pulumi.ComponentResource):
    """Builds (or pulls) the app image and one sandbox image per language."""

    app: docker.Image | docker.RemoteImage
    app_ref: pulumi.Output[str]
    sandboxes: dict[str, docker.Image | docker.RemoteImage]
    app_hash: str
    sandbox_hash: str

    def __init__(self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runbox:images:Images", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        wanted = discover_sandbox_images(args.languages_dir, args.sandbox_context)
        # Containers are labelled with these, so a changed image replaces the containers that use
        # it even though its tag stays the same.
        self.app_hash = context_hash(args.root, APP_CONTEXT)
        bases = sorted({s.base for s in wanted})
        dockerfiles = sorted({s.dockerfile.parent.name for s in wanted})
        self.sandbox_hash = context_hash(args.sandbox_context, ["agent", "base", *dockerfiles])

        self.sandboxes = {}
        # The shared bases first; every language image starts FROM one (see app/images.py).
        built_bases: dict[str, docker.Image] = {}
        for base in bases if args.build and args.sandboxes else ():
            recipe = base_build(base, wanted[0].image.rpartition(":")[2], args.sandbox_context)
            built_bases[base] = docker.Image(
                f"{name}-sandbox-{base}",
                image_name=recipe.image,
                build=docker.DockerBuildArgs(
                    context=str(args.sandbox_context),
                    dockerfile=str(recipe.dockerfile),
                    args=recipe.args,
                    platform=args.platform,
                ),
                skip_push=True,
                opts=child,
            )
        for sandbox in wanted if args.sandboxes else []:
            resource_name = f"{name}-sandbox-{sandbox.language}"
            if args.build:
                self.sandboxes[sandbox.language] = docker.Image(
                    resource_name,
                    image_name=sandbox.image,
                    build=docker.DockerBuildArgs(
                        context=str(args.sandbox_context),
                        dockerfile=str(sandbox.dockerfile),
                        args=sandbox.args,
                        platform=args.platform,
                    ),
                    # There is no registry to push to: the executor runs these tags locally.
                    skip_push=True,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[built_bases[sandbox.base]]),
                )
            else:
                self.sandboxes[sandbox.language] = docker.RemoteImage(
                    resource_name, name=sandbox.image, keep_locally=True, opts=child
                )

        if args.build:
            self.app = docker.Image(
                f"{name}-app",
                image_name=args.app_image,
                build=docker.DockerBuildArgs(
                    context=str(args.root),
                    dockerfile=str(args.root / "Dockerfile"),
                    args=dict(args.app_build_args) or None,
                    platform=args.platform,
                ),
                skip_push=True,
                opts=child,
            )
            self.app_ref = self.app.image_name
            if args.by_digest:
                # The built image's content id: every container of this host runs exactly these bits.
                built = docker.RemoteImage(
                    f"{name}-app-id", name=args.app_image, keep_locally=True,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[self.app]),
                )
                self.app_ref = built.image_id
        else:
            self.app = docker.RemoteImage(f"{name}-app", name=args.app_image, keep_locally=True, opts=child)
            self.app_ref = self.app.image_id

        self.register_outputs(
            {
                "app_image": self.app_ref,
                "sandbox_images": {s.language: s.image for s in wanted},
                "app_hash": self.app_hash,
                "sandbox_hash": self.sandbox_hash,
            }
        )
