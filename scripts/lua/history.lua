-- history.lua: which Redis history a shard's data belongs to.
--
-- Redis gives every primary's history a replication ID (INFO replication
-- master_replid): a replica promoted by a failover and a restarted Redis
-- start a new one. The shard records the ID its data was seeded or last
-- recovered in; reserve.lua and steal.lua hand out nothing while it
-- differs from the current one, and the service's failover recovery
-- rebuilds the shard from MongoDB and then records the new ID.
--
-- KEYS[1] history {ns:s}:h   string: the recorded replication ID
-- ARGV[1] "get":  reply {recorded ('' if none), current ('' if unknown)}
--         "init": record the current ID unless one is recorded; reply 1
--         "set":  record the current ID if it is still ARGV[2] (the one
--                 the recovery started from); reply 1, or 0 if Redis moved
--                 on to yet another history meanwhile

-- A Redis that does not report it (miniredis, the embedded default of
-- `make run`) has no history to check: '' throughout.
local info = redis.pcall('INFO', 'replication')
local cur = type(info) == 'string' and string.match(info, 'master_replid:(%x+)') or ''
if ARGV[1] == 'get' then
  return {redis.call('GET', KEYS[1]) or '', cur}
end
if ARGV[1] == 'init' then
  if cur ~= '' then
    redis.call('SET', KEYS[1], cur, 'NX')
  end
  return 1
end
if cur ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], cur)
return 1
