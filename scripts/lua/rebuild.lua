-- rebuild.lua: replace one shard's bucket for a code with the state a
-- reseed computed from MongoDB, in a new epoch, unfrozen.
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- ARGV[1] tokens  ARGV[2] disabled (0|1)  ARGV[3] expires (unix ms, 0 never)
-- ARGV[4] max_uses  ARGV[5] epoch
-- Reply: 1.

redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'tok', ARGV[1], 'so', 0, 'dis', ARGV[2], 'exp', ARGV[3], 'max', ARGV[4], 'ep', ARGV[5], 'frz', 0)
return 1
