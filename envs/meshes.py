"""Simplified copies of high-polygon visual meshes, for rendering speed.

Under software GL, vertex processing of the Panda's visual meshes (~350k vertices) is ~80% of the cost of an 84×84
frame; at that size a mesh of a few thousand faces looks the same. Only meshes used exclusively by visual geoms
(contype = conaffinity = 0) and drawn without a texture are simplified, so physics and textures are untouched.
Simplified meshes are cached on disk, keyed by the source file's content and the face budget.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path

MESH_CACHE = Path(os.environ.get("FAILSCOPE_CACHE", Path.home() / ".cache" / "failscope")) / "meshes"


def simplified_mesh(source: Path, max_faces: int) -> Path:
    """A copy of `source` with at most about `max_faces` faces (the source itself if already small)."""
    import fast_simplification
    import trimesh

    digest = hashlib.sha1(source.read_bytes() + str(max_faces).encode()).hexdigest()[:16]
    target = MESH_CACHE / f"{source.stem}-{digest}.stl"
    if target.exists():
        return target
    mesh = trimesh.load(source, force="mesh")
    # OBJ files index positions, normals and UVs separately; simplification needs shared vertices.
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    if len(mesh.faces) <= max_faces:
        return source
    points, faces = fast_simplification.simplify(
        mesh.vertices, mesh.faces, target_reduction=1.0 - max_faces / len(mesh.faces)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp.stl")
    trimesh.Trimesh(points, faces, process=False).export(tmp)
    tmp.replace(target)  # atomic: parallel workers never read half a file
    return target


def simplify_visual_meshes(xml: str, max_faces: int) -> str:
    """Points every large, untextured, visual-only mesh asset of a model XML at a simplified copy."""
    root = ET.fromstring(xml)
    textured = {m.get("name") for m in root.iter("material") if m.get("texture")}
    collision_meshes, textured_meshes, visual_meshes = set(), set(), set()
    for geom in root.iter("geom"):
        mesh = geom.get("mesh")
        if mesh is None:
            continue
        if geom.get("contype") == "0" and geom.get("conaffinity") == "0":
            visual_meshes.add(mesh)
        else:
            collision_meshes.add(mesh)
        if geom.get("material") in textured:
            textured_meshes.add(mesh)
    for asset in root.iter("mesh"):
        name, file = asset.get("name"), asset.get("file")
        if file is None or name not in visual_meshes or name in collision_meshes | textured_meshes:
            continue
        source = Path(file)
        if source.is_file() and source.stat().st_size > 100_000:
            asset.set("file", str(simplified_mesh(source, max_faces)))
    return ET.tostring(root, encoding="unicode")
