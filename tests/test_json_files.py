import pytest

from envs.json_files import read_json


def test_a_damaged_file_is_one_sentence_naming_it_and_the_fix(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"rollouts": 4')
    with pytest.raises(ValueError, match=r"^run: state.json is not valid JSON \(Expecting .*\); start a new run$"):
        read_json(path, fix="start a new run", shown="run: state.json")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=rf"^{path} is not valid JSON \(.*codec.*\); rerun$"):
        read_json(path, fix="rerun")
    path.write_text('{"rollouts": 4}')
    assert read_json(path, fix="rerun") == {"rollouts": 4}
