"""Chaining the user's Ray worker setup hook (roar_nb/ray/driver.py), without Ray: the
user's hook, a string or a callable, still runs after roar's, and roar's own is never
chained to itself."""

import sys

from roar_nb import ray as ray_mod
from roar_nb.ray import driver


def test_string_hook_is_kept_for_after_ours():
    env = driver.chain_user_hook({"worker_process_setup_hook": "userhook.setup", "env_vars": {"A": "1"}})
    assert env == {"worker_process_setup_hook": driver.SETUP_HOOK,
                   "env_vars": {"A": "1", "ROAR_RAY_USER_SETUP_HOOK": "userhook.setup"}}


def test_callable_hook_runs_after_ours(monkeypatch):
    monkeypatch.syspath_prepend(ray_mod.BOOT_DIR)
    monkeypatch.delenv("ROAR_RAY_SPOOL", raising=False)
    import roar_ray_hook

    calls = []
    monkeypatch.setattr(roar_ray_hook, "setup", lambda: calls.append("roar"))
    env = driver.chain_user_hook({"worker_process_setup_hook": lambda: calls.append("user") or 7})
    assert env["worker_process_setup_hook"]() == 7
    assert calls == ["roar", "user"]
    sys.modules.pop("roar_ray_hook", None)


def test_ours_is_not_chained_to_itself():
    same = {"worker_process_setup_hook": driver.SETUP_HOOK}
    assert driver.chain_user_hook(same) == same
    assert driver.chain_user_hook(None) is None and driver.chain_user_hook({}) == {}


def test_prepare_chains_an_existing_env_hook():
    class P:
        class config:
            get = staticmethod(lambda k: True)

    env = {"RAY_RUNTIME_ENV_HOOK": "theirs.hook", "PYTHONPATH": "/mine"}
    assert ray_mod.prepare(P, env, "/dev/shm/x/job", ["python", "s.py"], "/w", None) == ["python", "s.py"]
    assert env["RAY_RUNTIME_ENV_HOOK"] == ray_mod.HOOK and env["ROAR_RAY_USER_ENV_HOOK"] == "theirs.hook"
    assert env["PYTHONPATH"] == "/mine:" + ray_mod.BOOT_DIR  # at the end: the user's modules first
    assert env["ROAR_RAY_SPOOL"] == "/dev/shm/x/job-ray"


def _Draft():
    from roar_nb.capture.result import CaptureResult

    return CaptureResult()  # the command's pre-run result, which prepare() writes its notes to


class _On:
    class config:
        get = staticmethod(lambda k: True)


def test_job_submit_runtime_env_is_extended(tmp_path):
    import json

    d = _Draft()
    user = {"working_dir": ".", "env_vars": {"A": "1", "RAY_RUNTIME_ENV_HOOK": "theirs.hook"}, "excludes": ["*.log"]}
    argv = ["ray", "job", "submit", "--address", "http://127.0.0.1:1", "--runtime-env-json", json.dumps(user),
            "--", "python", "p.py", "--runtime-env-json", "not ours"]
    job = str(tmp_path / "job")
    got = ray_mod.prepare(_On, {}, job, argv, "/host/wd", d)
    assert got[:5] == argv[:5] and got[5] == "--runtime-env-json" and got[7:] == argv[7:]  # the entrypoint as is
    renv = json.loads(got[6])
    ev = renv["env_vars"]
    assert ev["A"] == "1" and ev["ROAR_RAY_USER_ENV_HOOK"] == "theirs.hook" and ev["ROAR_RAY_SUBMIT"] == "1"
    assert ev["RAY_RUNTIME_ENV_HOOK"].endswith("roar_ray_hook.env_hook") and ev["ROAR_RAY_SPOOL"] == job + "-ray"
    assert ev["LD_PRELOAD"].endswith("libroar_preload.so")
    assert renv["excludes"] == ["*.log", ".roar"] and renv["working_dir"] == "."
    assert renv["py_modules"] == [str(__import__("pathlib").Path(ray_mod.BOOT_DIR).parents[1])]
    assert json.loads((tmp_path / "job-ray" / "submit.json").read_text()) == {"working_dir": "/host/wd"}
    assert d.notes == [] and d.capture_level == "complete"


def test_job_submit_without_runtime_env_gains_one_and_a_yaml_file_is_said(tmp_path):
    import json

    d = _Draft()
    argv = ["/venv/bin/ray", "job", "submit", "--working-dir", "sub", "--", "python", "p.py"]
    got = ray_mod.prepare(_On, {}, str(tmp_path / "j"), argv, "/h", d)
    assert got[:5] == argv[:5] and got[5] == "--runtime-env-json" and got[7:] == argv[5:]
    assert json.loads(got[6])["excludes"] == [".roar"]
    assert json.loads((tmp_path / "j-ray" / "submit.json").read_text()) == {"working_dir": "/h/sub"}
    for bad in (["--runtime-env", "env.yaml"], ["--runtime-env-json", "[1]"]):
        d = _Draft()
        argv = ["ray", "job", "submit", *bad, "--", "python", "p.py"]
        assert ray_mod.prepare(_On, {}, str(tmp_path / "k"), argv, "/h", d) == argv
        assert d.capture_level == "partial" and "not captured" in d.notes[0]
