"""The one LD_PRELOAD composition rule (capture/preload.compose) used by `roar run`, the roar
kernel's launcher and python-level cells: roar's library first, the user's own libraries kept
in order (ld.so separates entries with colons or spaces), never two copies of roar's."""

from __future__ import annotations

from roar_nb.capture import preload

LIB = "/opt/roar/libroar_preload.so"


def test_the_users_libraries_follow_in_order():
    assert preload.compose(LIB, None) == LIB
    assert preload.compose(LIB, "") == LIB
    assert preload.compose(LIB, "/usr/lib/libjemalloc.so.2") == f"{LIB}:/usr/lib/libjemalloc.so.2"
    assert preload.compose(LIB, "/a.so /b.so::/c.so") == f"{LIB}:/a.so:/b.so:/c.so"


def test_another_copy_of_roars_library_is_replaced_not_doubled():
    old = "/other/build/libroar_preload.so:/usr/lib/libtcmalloc.so"
    assert preload.compose(LIB, old) == f"{LIB}:/usr/lib/libtcmalloc.so"
    assert preload.compose(LIB, preload.compose(LIB, old)) == preload.compose(LIB, old)  # idempotent
