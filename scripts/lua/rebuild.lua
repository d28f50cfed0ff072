-- rebuild.lua: one step of a reseed on one shard's bucket, allowed only
-- while the caller's freeze holds (same owner, deadline not passed by
-- Redis' clock); otherwise nothing changes and the reply is 0.
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- ARGV[1] owner token   ARGV[2] step: "zero" or "open"
-- with "zero": ARGV[3] the rebuild's new epoch
-- with "open": ARGV[3] tokens  ARGV[4] disabled (0|1)  ARGV[5] expires
-- (unix ms, 0 never)  ARGV[6] epoch  ARGV[7] confirmation window (ms, 0: none)
-- Reply: 1 done, 0 the freeze was lost (expired or taken by another reseed).
--
-- A reseed first zeroes every shard (still frozen), then opens each with
-- its new tokens: stopping half-way can only leave seats unused.

local b = redis.call('HMGET', KEYS[1], 'frz', 'fo')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if b[2] ~= ARGV[1] or (tonumber(b[1]) or 0) <= now then
  return 0
end
if ARGV[2] == 'zero' then
  -- The new epoch from here on: tokens taken before (carried in, or given
  -- back by a hold's expiry) are dropped, as the rebuild counts from
  -- MongoDB and from the holds it finds live.
  redis.call('HSET', KEYS[1], 'tok', 0, 'ep', ARGV[3])
  return 1
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'tok', ARGV[3], 'so', 0, 'dis', ARGV[4], 'exp', ARGV[5], 'ep', ARGV[6], 'frz', 0, 'cw', ARGV[7] or 0)
return 1
