-- expire.lua: give back the seat of one hold past its deadline, exactly
-- once, on the email's shard.
--
-- KEYS[1] email claim     {ns:s}:e:<canon>   h|<code>|<deadline>|<hold id>|<epoch>
-- KEYS[2] token bucket    {ns:s}:b:<code>    the hold's code on this shard
-- KEYS[3] hold deadlines  {ns:s}:hx          sorted set
-- KEYS[4] reservation log {ns:s}:x           stream
-- ARGV[1] canonical email   ARGV[2] the hold's code
--
-- Reply: {1, entry id} expired now (seat given back, claim gone, an
-- expiry entry appended); {0} nothing to do (confirmed, expired by another
-- caller, not yet due, another hold, or the code frozen by a reseed). Only the caller that finds the
-- hold due and removes its claim gives the seat back, so replicas sweeping
-- the same holds, and a confirmation racing the deadline, settle it once:
-- the script runs atomically, and a confirmation is refused from the
-- deadline on (confirm.lua reads the same clock).

local owner = redis.call('GET', KEYS[1])
local hcode, hdl, hid, hep
if owner then
  hcode, hdl, hid, hep = string.match(owner, '^h|([^|]+)|(%d+)|([^|]+)|(.*)$')
end
if not hcode or hcode ~= ARGV[2] then
  -- No hold of this code (confirmed, expired, never): a stale index entry
  -- goes, unless it is another live hold's.
  if not (owner and string.sub(owner, 1, 2) == 'h|') then
    redis.call('ZREM', KEYS[3], ARGV[1])
  end
  return {0}
end
local t = redis.call('TIME')
local snow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(hdl) > snow then
  return {0}
end
-- While a reseed freezes the code its rebuild decides the seats: a hold it
-- counted and that expires before it reopens the bucket would give its
-- token to a bucket the rebuild then overwrites. The hold waits (its
-- confirmation is refused already: past the deadline) and expires once the
-- code is open again.
if (tonumber(redis.call('HGET', KEYS[2], 'frz') or '0') or 0) > snow then
  return {0}
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
-- The seat goes back only to the bucket it was taken from: a reseed's
-- rebuild (another epoch) counted the holds MongoDB held, and a missing
-- bucket is rebuilt from MongoDB anyway.
local b = redis.call('HMGET', KEYS[2], 'tok', 'ep')
if b[1] and (b[2] or '0') == hep then
  redis.call('HINCRBY', KEYS[2], 'tok', 1)
  redis.call('HSET', KEYS[2], 'so', 0)
end
local id = redis.call('XADD', KEYS[4], '*', 'c', hcode, 'k', ARGV[1], 'x', hid)
return {1, id}
