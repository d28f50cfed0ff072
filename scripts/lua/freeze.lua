-- freeze.lua: stop all signups of a code on one shard for a while, on
-- behalf of one reseed (its owner token), while it drains and rebuilds the
-- code. A missing bucket is created empty and frozen, so no seeder can fill
-- it meanwhile. The deadline is taken from Redis' own clock, so no caller's
-- clock can shorten it. The latest freeze owns the code: an older reseed
-- that is still running can no longer rebuild it (see rebuild.lua).
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- ARGV[1] freeze for (ms)   ARGV[2] owner token
-- Reply: 1.

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'tok', 0, 'so', 0, 'dis', 0, 'exp', 0)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'frz', now + tonumber(ARGV[1]), 'fo', ARGV[2])
return 1
