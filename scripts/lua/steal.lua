-- steal.lua: take up to half (rounded up) of one shard's tokens for a code,
-- so that a request on an empty shard can carry them to its own shard.
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- Reply: the number of tokens taken (0 when the bucket is empty or missing).
--
-- Taking and depositing are two calls on two slots: a caller that dies in
-- between strands the tokens (under-admission, repaired by reseed); tokens
-- are never created.

local t = tonumber(redis.call('HGET', KEYS[1], 'tok') or '0')
if t <= 0 then
  return 0
end
local take = math.ceil(t / 2)
redis.call('HINCRBY', KEYS[1], 'tok', -take)
return take
