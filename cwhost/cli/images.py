"""``cwhost images``: build the types' images, and list what is built."""

from __future__ import annotations

import argparse
import os
import sys
import time

from cwhost.config.server import Config
from cwhost.images.builder import BuildError, ImageBuilder
from cwhost.images.catalog import ImageCatalog


def add_parser(commands) -> None:
    images = commands.add_parser("images", help="workstation types' boot images")
    images.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
    image_commands = images.add_subparsers(dest="images_command", required=True)
    build = image_commands.add_parser(
        "build", help="build types' images from Debian packages (as root; needs mmdebstrap)"
    )
    build.add_argument("types", nargs="*", metavar="TYPE", help="the types to build (default: every type)")
    image_commands.add_parser("list", help="each type's current image: when built, size, sha256")


def run(config: Config, args) -> int:
    catalog = ImageCatalog(config.images_dir)
    if args.images_command == "list":
        return _list(config, catalog)
    return _build(config, catalog, args.types)


def _list(config: Config, catalog: ImageCatalog) -> int:
    for wtype in config.types:
        if not wtype.boots_built_image:
            print(f"{wtype.id}: boots {wtype.boot.image or wtype.boot.kernel} (named in the configuration)")
            continue
        built = catalog.current(wtype.id)
        if built is None:
            print(f"{wtype.id}: not built (cwhost images build {wtype.id})")
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(built.built_at))
        print(f"{wtype.id}: {built.directory} built {when}, {built.size_bytes / 2**20:.0f} MiB, sha256 {built.sha256}")
    return 0


def _build(config: Config, catalog: ImageCatalog, type_ids: list[str]) -> int:
    offered = {t.id: t for t in config.types}
    unknown = [t for t in type_ids if t not in offered]
    if unknown:
        print(f"cwhost: no workstation type {unknown[0]!r}; the types are: {', '.join(offered)}", file=sys.stderr)
        return 2
    wanted = [offered[t] for t in type_ids] if type_ids else [t for t in config.types if t.boots_built_image]
    named = [t.id for t in wanted if not t.boots_built_image]
    if named:
        print(
            f"cwhost: type {named[0]} boots files its configuration names; there is nothing to build", file=sys.stderr
        )
        return 2
    if os.geteuid() != 0:
        print("cwhost: building images needs root (mmdebstrap --mode=root, chroot)", file=sys.stderr)
        return 2
    builder = ImageBuilder(catalog, config.images.mirror, config.disk_dir, say=lambda line: print(line, flush=True))
    for wtype in wanted:
        try:
            builder.build(wtype)
        except BuildError as exc:
            print(f"cwhost: building {wtype.id} failed: {exc}", file=sys.stderr)
            return 1
    return 0
