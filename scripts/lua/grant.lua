-- grant.lua: add capacity to one shard's bucket for a code (invitectl
-- set-max up, or undoing a refused set-max down).
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- ARGV[1] tokens to add (>= 0)
-- Reply: 1 done, 0 no bucket (the code is not seeded; seeding will read
-- the new max_uses from MongoDB).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'tok', ARGV[1])
redis.call('HSET', KEYS[1], 'so', 0)
return 1
