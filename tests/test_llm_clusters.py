"""Failure clusters through language models, against a local fake OpenAI-compatible server: reasons from frames,
the prompt ensemble, aggregation, assignment with outliers, and every fallback (malformed, partial or missing
answers, a dead endpoint) warning instead of crashing."""

import json
import warnings

import numpy as np
import pytest
from fake_endpoint import FakeEndpoint, completion, prompt_text
from test_search_cli import config

from diagnosis import cluster
from diagnosis.clusters import OUTLIER
from diagnosis.llm_clusters import (
    LanguageModelClustering,
    LLMSettings,
    Proposal,
    parse_assignments,
    parse_clusters,
    reason_images,
)
from diagnosis.search import run_search

FRAMES = np.zeros((10, 8, 8, 3), dtype=np.uint8)
PROPOSED = ["You are a failure analyst. Sort the {reasons} into modes.", "Cluster these.", "Group by cause."]
PER_PROMPT = [{"name": "blue cube", "description": "c", "keywords": ["blue"]}, {"name": "blue light"}]
MERGED = [
    {"name": "cube colour confuses the grasp", "description": "the cube looks blue", "keywords": ["blue cube"]},
    {"name": "tinted light", "description": "the light is blue", "keywords": ["light"]},
    {"name": "never used", "description": "nobody is assigned here"},
]


def words(texts):
    """A sentence encoder stand-in: which of a few words each text has (unit vectors)."""
    vocabulary = ("cube", "light", "gripper", "table")
    vectors = np.array([[w in t.lower() for w in vocabulary] + [1e-3] for t in texts], dtype=float)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def scripted():
    """What a well-behaved model answers to each step's prompt (reasons: the cube's, then the light's, in turn)."""
    reasons = iter(["the cube is blue; the gripper misses it", "the light is blue and the gripper closes early"] * 9)

    def answer(body):
        text = prompt_text(body)
        if "frames of one failed attempt" in text:
            return completion(json.dumps({"description": "a table, a cube and the robot", "reason": next(reasons)}))
        if "alternative prompts" in text:
            return completion("Here you are:\n```json\n" + json.dumps({"prompts": PROPOSED}) + "\n```")
        if "clusterings of the same" in text:
            return completion(json.dumps({"clusters": MERGED}))
        if "Reasons (a count in brackets" in text:
            return completion(json.dumps({"clusters": PER_PROMPT}))
        if "Assign each failed attempt" in text:
            lines = [line for line in text.splitlines() if line.startswith("Attempt ")]
            chosen = {line.split()[1].rstrip(":"): 0 if "cube is blue" in line else 1 for line in lines}
            return completion(json.dumps({"assignments": chosen}))
        return 400, b'{"error": "unexpected prompt"}'

    return answer


@pytest.fixture
def server():
    servers = []

    def start(replies):
        servers.append(FakeEndpoint(replies))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def model(base_url: str, **settings) -> LanguageModelClustering:
    return LanguageModelClustering(
        LLMSettings(base_url=base_url, model="fake-llm", backoff_s=0.0, **settings), task="lift the cube", encode=words
    )


def test_cli_runs_the_papers_four_steps_against_the_endpoint(server, tmp_path):
    endpoint = server(scripted())
    run = tmp_path / "run"
    run_search(config("search=uniform", "search.total_rollouts=4"), run)  # the fake policy fails in blue scenes
    cluster.main([f"run={run}", "method=llm", f"llm.base_url={endpoint.base_url}", "llm.model=fake-llm"])
    document = json.loads((run / "clusters.json").read_text())
    bodies = [r["body"] for r in endpoint.requests]
    assert all(b["model"] == "fake-llm" for b in bodies) and document["requests"] == len(bodies) == 2 + 1 + 4 + 1 + 1
    first = bodies[0]["messages"][-1]["content"]  # a reason request: the prompt, then 4 upscaled frames
    assert "lift the cube" in first[0]["text"] and [p["type"] for p in first[1:]] == ["image_url"] * 4
    assert document["prompts"][1:] == PROPOSED and "mutually exclusive" in document["prompts"][0]
    for prompt in PROPOSED:  # each prompt of the ensemble clustered the reasons once
        assert sum(prompt_text(b).startswith(prompt) for b in bodies) == 1
    assert document["fallbacks"] == {} and "fake-llm" in document["method"]
    names = [c["name"] for c in document["clusters"]]
    assert sorted(names) == ["cube colour confuses the grasp", "tinted light"]  # the unused cluster is dropped
    by_reason = {a["reason"]: names[a["cluster"]] for a in document["assignments"]}
    assert by_reason == {
        "the cube is blue; the gripper misses it": "cube colour confuses the grasp",
        "the light is blue and the gripper closes early": "tinted light",
    }
    assert all(a["description"] == "a table, a cube and the robot" for a in document["assignments"])
    assert sum(c["size"] for c in document["clusters"]) == document["failures"] == 2
    assert all(name in (run / "report.html").read_text() for name in names)


def test_malformed_answers_fall_back_step_by_step_with_one_warning_each(server):
    endpoint = server([completion("Sorry, I cannot look at images."), completion("{'clusters': oops")])
    llm = model(endpoint.base_url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [llm.reason(FRAMES, offline=f"offline reason {i}") for i in range(3)]
        clusters, labels, _ = llm.run(
            ["", "", ""], ["the cube turned blue", "the cube turned blue", "the light dimmed"], distance=0.2, min_size=1
        )
    assert answers == [("", f"offline reason {i}") for i in range(3)]
    assert llm.fallbacks == {"reason": 3, "prompt ensemble": 1, "clustering": 1, "offline clusters": 1}
    messages = [str(w.message) for w in caught]
    assert sum(m.startswith("reason: no usable answer") for m in messages) == 1  # once, not per rollout
    assert any("using the offline clusters" in m for m in messages)
    assert labels.tolist() == [0, 0, 1] and [c.size for c in clusters] == [2, 1]


def test_a_dead_endpoint_is_no_longer_called_and_everything_falls_back(server):
    endpoint = server([(503, b"down")])
    llm = model(endpoint.base_url, retries=0, disable_after=2)
    with pytest.warns(RuntimeWarning, match="endpoint .* failed"):
        reasons = [llm.reason(FRAMES, offline="offline")[1] for _ in range(4)]
        clusters, labels, _ = llm.run(["", "", "", ""], reasons, distance=0.5, min_size=1)
    assert len(endpoint.requests) == 2 and llm.endpoint.disabled
    assert reasons == ["offline"] * 4 and labels.tolist() == [0] * 4 and clusters[0].size == 4


def test_assignment_keeps_valid_answers_flags_outliers_and_embeds_the_rest(server):
    reply = {"assignments": {"0": 1, "1": 7, "2": -1, "4": True}}  # 7 is no cluster; True is no number; 3 missing
    endpoint = server([completion(json.dumps(reply))])
    llm = model(endpoint.base_url, batch=5)
    proposals = [Proposal("gripper misses", "", ("gripper",)), Proposal("light tinted", "", ("light",))]
    reasons = ["the light is off", "the gripper slips", "weird", "the light is red", "the gripper opens"]
    labels = llm.assignments([""] * 5, reasons, proposals)
    assert labels.tolist() == [1, 0, OUTLIER, 1, 0] and llm.fallbacks["assignment by embedding"] == 3
    assert len(endpoint.requests) == 1


def test_a_monitor_heatmap_goes_with_the_frames(server):
    endpoint = server([completion('{"reason": "the cube slipped"}')])
    frame, heatmap = FRAMES[3], np.eye(7, dtype=np.float32)
    assert model(endpoint.base_url, frames=2).reason(FRAMES, offline="x", heatmap=(frame, heatmap)) == (
        "",
        "the cube slipped",
    )
    content = endpoint.requests[0]["body"]["messages"][-1]["content"]
    assert "anomaly heatmap" in content[0]["text"] and len(content) == 1 + 2 + 1


def test_parsers_and_frames():
    assert parse_assignments('{"assignments": [{"attempt": 2, "cluster": "1"}]}', [2, 3], 2) == {2: 1}
    found = parse_clusters('```json\n{"clusters": [{"name": "A"}, {"name": "a"}, {"keywords": []}, "x"]}\n```')
    assert found == [Proposal("A", "", ())]  # names unique, entries without a name left out
    assert parse_clusters('{"clusters": []}') is None
    frames = np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 3), dtype=np.uint8)
    assert [int(f[0, 0, 0]) for f in reason_images(frames, 4)] == [0, 5, 7, 9]
    with pytest.raises(ValueError, match="llm.batch must be >= 1"):
        LLMSettings(batch=0)
    with pytest.raises(SystemExit, match="unknown method 'gpt'; valid: offline, llm"):
        cluster.main(["run=x", "method=gpt"])
