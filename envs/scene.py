"""A live robosuite task whose MjModel perturbations edit in place and restore exactly.

robosuite rebuilds the whole model on every `reset()` by default (`hard_reset=True`), which costs far more than
an episode of physics and would throw away in-place edits. A Scene builds the env once with `hard_reset=False`,
snapshots every model array a perturbation may touch, and copies the snapshot back before each episode.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import mujoco
import numpy as np

from envs.meshes import simplify_visual_meshes
from envs.tasks import TaskSpec, get_task

# Model arrays perturbations edit; `restore()` copies all of them back.
EDITABLE_FIELDS = (
    "geom_rgba",
    "geom_matid",
    "geom_size",
    "geom_rbound",
    "geom_aabb",
    "geom_pos",
    "geom_friction",
    "geom_contype",
    "geom_conaffinity",
    "body_pos",
    "body_mass",
    "body_inertia",
    "light_diffuse",
    "light_ambient",
    "light_specular",
    "light_dir",
    "light_pos",
    "cam_pos",
    "cam_quat",
    "cam_fovy",
    "site_pos",
    "mat_rgba",
)

DISTRACTOR_SHAPES = {"box": "0.025 0.025 0.025", "cylinder": "0.022 0.03", "sphere": "0.025"}
DISTRACTOR_PARK = np.array([20.0, 20.0, 5.0])  # far outside every camera's view


def distractor_body(shape: str) -> str:
    return f"distractor_{shape}"


def _add_distractors(xml: str) -> str:
    """Adds one parked, invisible mocap body per distractor shape, so distractors need no model rebuild.

    Mocap bodies add no degrees of freedom: states stay comparable with the nominal model's.
    """
    root = ET.fromstring(xml)
    world = root.find("worldbody")
    for i, (shape, size) in enumerate(DISTRACTOR_SHAPES.items()):
        pos = DISTRACTOR_PARK + np.array([i, 0.0, 0.0])
        body = ET.SubElement(world, "body", name=distractor_body(shape), mocap="true", pos=" ".join(map(str, pos)))
        ET.SubElement(
            body,
            "geom",
            name=f"{distractor_body(shape)}_g0",
            type=shape,
            size=size,
            rgba="0.9 0.6 0.1 1",
            contype="0",
            conaffinity="0",
            group="1",
            mass="0.05",
        )
    return ET.tostring(root, encoding="unicode")


def import_robosuite():
    """robosuite, imported without its import-time warnings (no private macro file, optional robot packages)
    and with its logger quietened to errors: a FailScope user can act on neither."""
    logging.disable(logging.WARNING)
    try:
        import robosuite
    finally:
        logging.disable(logging.NOTSET)
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    return robosuite


class SimulationError(RuntimeError):
    """The physics went unstable (NaN/inf state or a MuJoCo warning)."""


class Scene:
    """A robosuite env for one task, built once, with exact restore of every perturbable model field."""

    def __init__(self, task: str | TaskSpec, seed: int = 0, visual_mesh_faces: int | None = 2000):
        """`visual_mesh_faces`: face budget of simplified visual meshes (see envs.meshes); None keeps robosuite's."""
        robosuite = import_robosuite()
        self.task = get_task(task)
        self.env = robosuite.make(
            self.task.env_name,
            robots=self.task.robot,
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
            use_object_obs=True,
            hard_reset=False,
            control_freq=self.task.control_freq,
            horizon=self.task.horizon,
            ignore_done=True,
            reward_shaping=False,
            seed=seed,
            **self.task.env_kwargs,
        )
        self.env.set_xml_processor(_add_distractors)
        if visual_mesh_faces is not None:
            self.env.set_xml_processor(lambda xml: simplify_visual_meshes(xml, visual_mesh_faces))
        self.env.reset_from_xml_string(self.env.model.get_xml())
        self._nominal = {name: getattr(self.model, name).copy() for name in EDITABLE_FIELDS}
        self.episode_start_values = self._nominal
        self._contact_geom_names: dict[str, list[str]] = {}
        self._object_half_heights = {body: self._half_height(body) for body in self.task.objects}

    # ----------------------------------------------------------------------------------------------- access
    @property
    def model(self) -> mujoco.MjModel:
        return self.env.sim.model._model

    @property
    def data(self) -> mujoco.MjData:
        return self.env.sim.data._data

    def body_id(self, name: str) -> int:
        body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
        if body < 0:
            raise ValueError(f"task {self.task.name!r} has no body {name!r}")
        return body

    def subtree_bodies(self, root: str) -> list[int]:
        """The body and all its descendants."""
        root_id = self.body_id(root)
        bodies = [root_id]
        for b in range(root_id + 1, self.model.nbody):
            if self.model.body_parentid[b] in bodies:
                bodies.append(b)
        return bodies

    def geoms_of(self, root: str, visual: bool | None = None) -> np.ndarray:
        """Geoms in a body subtree; visual=True keeps rendered-only geoms, False collision geoms, None both."""
        bodies = self.subtree_bodies(root)
        geoms = np.flatnonzero(np.isin(self.model.geom_bodyid, bodies))
        if visual is None:
            return geoms
        is_visual = (self.model.geom_contype[geoms] == 0) & (self.model.geom_conaffinity[geoms] == 0)
        return geoms[is_visual] if visual else geoms[~is_visual]

    def robot_visual_geoms(self) -> np.ndarray:
        names = [mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_BODY, b) or "" for b in range(self.model.nbody)]
        roots = [n for n in names if n in ("robot0_base", "fixed_mount0_base")]
        return np.concatenate([self.geoms_of(r, visual=True) for r in roots])

    def camera_id(self, name: str | None = None) -> int:
        name = name or self.task.camera
        cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if cam < 0:
            raise ValueError(f"task {self.task.name!r} has no camera {name!r}")
        return cam

    def object_half_height(self, body: str) -> float:
        return self._object_half_heights[body]

    def _half_height(self, body: str) -> float:
        """How far a body's collision geoms reach below its origin when it stands upright (model only)."""
        lowest = 0.0
        for g in self.geoms_of(body, visual=False):
            rot = np.empty(9)
            mujoco.mju_quat2Mat(rot, self.model.geom_quat[g])
            z_row = rot.reshape(3, 3)[2]
            center, half = self.model.geom_aabb[g][:3], self.model.geom_aabb[g][3:]
            low = self.model.geom_pos[g][2] + z_row @ center - np.abs(z_row) @ half
            lowest = min(lowest, low)
        return float(-lowest)

    def refresh_object_geometry(self) -> None:
        """Recomputes derived per-object quantities after a size change."""
        self._object_half_heights = {body: self._half_height(body) for body in self.task.objects}

    # ------------------------------------------------------------------------------------------ lifecycle
    def restore(self) -> None:
        """Copies every perturbable model array back to its nominal value (exact, no rebuild)."""
        for name, value in self._nominal.items():
            getattr(self.model, name)[...] = value
        self._object_half_heights = {body: self._half_height(body) for body in self.task.objects}

    def mark_episode_start(self) -> None:
        """Remembers the perturbable model arrays as the episode starts (reset-time perturbations applied): what
        per-step perturbations (`Perturbation.during`) vary around."""
        self.episode_start_values = {name: getattr(self.model, name).copy() for name in EDITABLE_FIELDS}

    def eef_position(self) -> np.ndarray:
        """The robot's end-effector (grip site) position in the world frame."""
        return self.data.site_xpos[self.env.robots[0].eef_site_id["right"]].copy()

    def object_lift(self, body: str) -> float:
        """How high (metres) the bottom of `body` is above the table top (as the task's success rule measures it)."""
        return float(self.data.xpos[self.body_id(body)][2] - self.object_half_height(body) - self.task.table_top)

    def is_grasped(self, body: str) -> bool:
        """Both finger pads touch `body` (robosuite's own grasp test)."""
        if body not in self._contact_geom_names:
            geoms = self.geoms_of(body, visual=False)
            self._contact_geom_names[body] = [mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in geoms]
        return bool(
            self.env._check_grasp(gripper=self.env.robots[0].gripper, object_geoms=self._contact_geom_names[body])
        )

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        """Nominal reset with robosuite's own initial-state randomisation, seeded."""
        # Samplers and robots hold a reference to env.rng: reseed it in place rather than replacing it.
        self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self.restore()
        self.env.reset()
        self.park_distractors()
        return self.observe()

    def park_distractors(self) -> None:
        for i, shape in enumerate(DISTRACTOR_SHAPES):
            mocap = self.model.body_mocapid[self.body_id(distractor_body(shape))]
            self.data.mocap_pos[mocap] = DISTRACTOR_PARK + np.array([i, 0.0, 0.0])

    def forward(self) -> None:
        mujoco.mj_forward(self.model, self.data)

    def observe(self) -> dict[str, np.ndarray]:
        """robosuite's low-dimensional observations for the current state (after any direct state edit)."""
        self.forward()
        return self.env._get_observations(force_update=True)

    def _warning_counts(self) -> list[int]:
        # Indexing data.warning builds wrapper objects; keep them (they are views) for the per-step check.
        if getattr(self, "_warnings_data", None) is not self.data:
            self._warnings_data = self.data
            self._warnings = [self.data.warning[i] for i in range(len(mujoco.mjtWarning.__members__) - 1)]
        return [w.number for w in self._warnings]

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """One control step; raises SimulationError when the physics goes unstable (NaN/inf, MuJoCo warning)."""
        before = self._warning_counts()
        obs, _, _, _ = self.env.step(action)
        after = self._warning_counts()
        if not (np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qacc))):
            raise SimulationError(f"non-finite state at t={self.data.time:.3f}s")
        new = [mujoco.mjtWarning(i).name for i, (a, b) in enumerate(zip(after, before)) if a > b]
        if new:
            raise SimulationError(f"MuJoCo warning {', '.join(new)} at t={self.data.time:.3f}s")
        return obs

    def is_success(self) -> bool:
        spec = self.task
        if spec.lift_success_height is None:
            return bool(self.env._check_success())
        return self.object_lift(spec.primary_object) > spec.lift_success_height

    def object_off_table(self) -> bool:
        """The primary object fell below the support surface: a failure the episode cannot recover from."""
        z = self.data.xpos[self.body_id(self.task.primary_object)][2]
        return bool(z < self.task.table_top - 0.05)

    def get_state(self) -> np.ndarray:
        """robomimic's flattened state (time, qpos, qvel) for replay."""
        return np.asarray(self.env.sim.get_state().flatten())

    def close(self) -> None:
        self.env.close()
