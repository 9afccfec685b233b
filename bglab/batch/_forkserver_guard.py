"""Imported once, by the multiprocessing forkserver of :func:`bglab.batch.pool.pool_context`
(``set_forkserver_preload``): the forkserver then dies with the process that started it, and its workers (which
get the same guard in their initializer, :func:`bglab.batch.pool.die_with_parent`) die with it. Not meant to be
imported anywhere else: importing it makes the importing process die with its parent."""

from __future__ import annotations

from bglab.batch.pool import _set_pdeathsig

_set_pdeathsig()
