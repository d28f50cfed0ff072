-- revoke.lua: remove up to n unused tokens from one shard's bucket for a
-- code (invitectl set-max down).
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- ARGV[1] tokens wanted (>= 0)
-- Reply: tokens removed, or -1 when there is no bucket.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local t = tonumber(redis.call('HGET', KEYS[1], 'tok') or '0')
local take = math.min(math.max(t, 0), tonumber(ARGV[1]))
if take > 0 then
  redis.call('HINCRBY', KEYS[1], 'tok', -take)
end
return take
