-- steal.lua: take up to half (rounded up) of one shard's tokens for a code,
-- so that a request on an empty shard can carry them to its own shard.
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- Reply: {tokens taken, epoch of the bucket}. Nothing is taken from a
-- missing, empty or frozen bucket. The epoch goes with the tokens, so
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
local take = math.ceil(t / 2)
redis.call('HINCRBY', KEYS[1], 'tok', -take)
return {take, ep}
