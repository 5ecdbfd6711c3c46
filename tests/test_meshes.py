import numpy as np

from envs.render import CameraRenderer
from envs.scene import Scene


def test_simplified_meshes_change_neither_physics_nor_the_picture(lift_runner):
    simplified = lift_runner.scene  # built with the default face budget
    original = Scene("lift", visual_mesh_faces=None)
    assert simplified.model.nmeshvert < original.model.nmeshvert / 2
    # Physics sees exactly the same model: collision geoms, masses, inertias.
    collision = (original.model.geom_contype != 0) | (original.model.geom_conaffinity != 0)
    for name in ("geom_size", "geom_pos", "geom_type"):
        np.testing.assert_array_equal(
            getattr(simplified.model, name)[collision], getattr(original.model, name)[collision], err_msg=name
        )
    for name in ("body_mass", "body_inertia", "body_pos"):
        np.testing.assert_array_equal(getattr(simplified.model, name), getattr(original.model, name), err_msg=name)
    images = []
    for scene in (simplified, original):
        scene.reset(seed=4)
        for _ in range(15):
            scene.step(np.array([0.4, 0.0, 0.2, 0.0, 0.0, 0.0, -1.0]))
        renderer = CameraRenderer(scene.model, "frontview", 128)
        images.append(renderer.render(scene.data).astype(float))
        renderer.close()
    np.testing.assert_allclose(simplified.data.qpos, original.data.qpos, atol=1e-9)
    assert np.abs(images[0] - images[1]).mean() < 3.0
    original.close()
