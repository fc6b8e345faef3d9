"""How full Valkey is, as new work sees it.

Valkey runs with `noeviction`: at `maxmemory` every write fails. A worker needs writes to end
a job (its events, a retry, its heartbeat), and a job's end is what frees the upload it holds,
so a Valkey filled by new work would never empty again. New work is therefore refused before
the limit: once used memory would pass `maxmemory` less a reserve (a fraction of it), which
is left for the writes of the jobs already accepted. Without a `maxmemory` there is no line.

The check is a Lua function that runs inside the script creating a job (jobs.py): it reads
INFO there, so it costs no round trip of its own, and it is exact however many API processes
create jobs at once (a reading cached in each process lets a burst from several of them, or
from concurrent requests to one, past the line together before any re-reads).
"""

from __future__ import annotations

# `reserve` is a fraction of maxmemory; `incoming` the bytes the job is about to write. A
# server that refuses INFO to scripts is taken to have no limit rather than to refuse all.
LUA = """
local function memory_over(reserve, incoming)
  local info = redis.pcall('INFO', 'memory')
  if type(info) ~= 'string' then return false end
  local limit = tonumber(string.match(info, '\\nmaxmemory:(%d+)')) or 0
  if limit == 0 then return false end
  local used = tonumber(string.match(info, '\\nused_memory:(%d+)')) or 0
  return used + incoming > limit - math.floor(limit * reserve)
end
"""
