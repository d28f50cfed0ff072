-- freeze.lua: stop all signups of a code on one shard until a time, while
-- a reseed drains and rebuilds it. A missing bucket is created empty and
-- frozen, so no seeder can fill it meanwhile.
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- ARGV[1] frozen until (unix ms)
-- Reply: 1.

if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'tok', 0, 'so', 0, 'dis', 0, 'exp', 0, 'max', 0)
end
redis.call('HSET', KEYS[1], 'frz', ARGV[1])
return 1
