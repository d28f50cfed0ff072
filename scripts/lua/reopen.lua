-- reopen.lua: forget a shard's sold-out mark for a code, after tokens came
-- back (give-back, more capacity), so the next request looks again.
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- Reply: 1 if the bucket exists, 0 otherwise (nothing is created).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'so', 0)
return 1
