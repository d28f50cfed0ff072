-- state.lua: set one field of one shard's bucket for a code, without
-- creating the bucket (invitectl disable / enable).
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- ARGV[1] field (dis)   ARGV[2] value
-- Reply: 1 done, 0 no bucket.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'so', 0)
return 1
