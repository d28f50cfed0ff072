-- steal.lua: take up to half (rounded up) of one shard's tokens for a code,
-- so that a request on an empty shard can carry them to its own shard.
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- KEYS[2] history      {ns:s}:h (see history.lua)
-- Reply: {tokens taken, epoch of the bucket}. Nothing is taken from a
-- missing, empty or frozen bucket; {-1, epoch} when this Redis is no
-- longer the history the shard was seeded in (its tokens may count seats
-- it lost, so none may move until the shard is recovered). The epoch goes with the tokens, so
-- reserve.lua drops them if a reseed rebuilt the code in between.
--
-- Taking and depositing are two calls on two slots: a caller that dies in
-- between strands the tokens (under-admission, repaired by reseed); tokens
-- are never created.

local b = redis.call('HMGET', KEYS[1], 'tok', 'frz', 'ep')
local ep = b[3] or '0'
local frz = tonumber(b[2])
if frz and frz > 0 then
  local t = redis.call('TIME')
  if frz > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
    return {0, ep}
  end
end
local t = tonumber(b[1] or '0')
if t <= 0 then
  return {0, ep}
end
local info = redis.pcall('INFO', 'replication')
local cur = type(info) == 'string' and string.match(info, 'master_replid:(%x+)')
if cur then
  local hist = redis.call('GET', KEYS[2])
  if hist and hist ~= cur then
    return {-1, ep}
  end
end
local take = math.ceil(t / 2)
redis.call('HINCRBY', KEYS[1], 'tok', -take)
return {take, ep}
