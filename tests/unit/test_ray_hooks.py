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
    ray_mod.prepare(P, env, "/dev/shm/x/job")
    assert env["RAY_RUNTIME_ENV_HOOK"] == ray_mod.HOOK and env["ROAR_RAY_USER_ENV_HOOK"] == "theirs.hook"
    assert env["PYTHONPATH"] == "/mine:" + ray_mod.BOOT_DIR  # at the end: the user's modules first
    assert env["ROAR_RAY_SPOOL"] == "/dev/shm/x/job-ray"
