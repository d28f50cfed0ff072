-- restorehold.lua: put back one live hold that MongoDB recorded and Redis
-- lost (a wipe, a failover to a replica that never received it), on the
-- email's shard. Seeding calls it only for buckets it has just created,
-- which counted the hold; a reseed before its rebuild, which counts it.
--
-- KEYS[1] email claim     {ns:s}:e:<canon>
-- KEYS[2] hold deadlines  {ns:s}:hx
-- ARGV[1] the claim: h|<code>|<deadline ms>|<hold id>|<epoch>
-- ARGV[2] deadline (ms)   ARGV[3] canonical email
--
-- Reply: 1 restored (also over a claim that is a hold past its deadline:
-- an older hold not yet swept); 0 the email has a live claim (the same
-- hold, a registration, a newer hold), or the deadline has passed by Redis' clock
-- (the caller's clock may lag: such a hold is over, its seat free, and
-- restoring it would let its expiry give the seat back a second time).

local t = redis.call('TIME')
local snow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[2]) <= snow then
  return 0
end
-- A claim that is a hold past its deadline is over (not yet swept): its
-- seat is free for whoever counts, so the newer live hold replaces it.
local owner = redis.call('GET', KEYS[1])
if owner then
  local dl = string.match(owner, '^h|[^|]+|(%d+)|')
  if not dl or tonumber(dl) > snow then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
