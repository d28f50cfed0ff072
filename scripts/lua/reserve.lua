-- reserve.lua: one signup attempt, atomically, on one shard.
--
-- All keys carry the shard's hash tag, so the script runs on one Redis
-- (Cluster) node and touches one hash slot.
--
-- KEYS[1] seeded sentinel   {ns:s}:seeded        string: shard count K
-- KEYS[2] token bucket      {ns:s}:b:<code>      hash: tok, so, dis, exp, frz,
--                                                 fo, ep, sl (sweep lease holder),
--                                                 cw (confirmation window, ms)
-- KEYS[3] email claim       {ns:s}:e:<canon>     string: code, or a hold:
--                                                 h|<code>|<deadline ms>|<hold id>|<epoch>
-- KEYS[4] reservation log   {ns:s}:x             stream
-- KEYS[5] history           {ns:s}:h             string: Redis' replication ID
--                                                 when the shard was seeded or last
--                                                 recovered (see history.lua)
-- KEYS[6] hold deadlines    {ns:s}:hx            sorted set: canonical email by
--                                                 its hold's deadline (ms)
-- KEYS[7] transfer mark      {ns:s}:t:<id>        string (only with carried tokens)
-- ARGV[1] code   ARGV[2] canonical email   ARGV[3] email as entered (normalized)
-- ARGV[4] now (unix ms)   ARGV[5] tokens carried in from other shards (>= 0)
-- ARGV[6] sold-out mark TTL in ms (0: answer 5 instead of marking)
-- ARGV[7] shard count K of the caller
-- ARGV[8] epoch of the bucket the carried tokens came from (see steal.lua)
-- ARGV[9] sweep lease in ms (absent or 0: none); see the no-token branch
-- ARGV[10] "1" when the caller WAITs for replicas (INVITEGATE_ACK=replica):
--          a repeat then writes its claim again (same value), so that the
--          caller's WAIT covers the claim (see the claim branch)
--
-- Carried tokens are added at most once per transfer: the first run sets
-- the transfer mark (10 minutes), a second run of the same call (a client
-- resending after a lost reply) finds it and adds nothing, so a resend can
-- never create seats.
--
-- Reply (first element is the status):
--   {1, stream id}  reserved: token taken, claim set, entry appended
--   {2}             this email already holds this code (idempotent success)
--   {3, code}       this email already holds another code
--   {4}             no token on this shard and the code is marked sold out
--   {5}             no token on this shard: caller should move tokens here
--   {6, reason}     code closed: "disabled" or "expired"
--   {7}             no bucket for this code on this shard (unknown or unseeded)
--   {8}             shard not seeded from MongoDB yet
--   {9, K}          shard seeded for a different shard count
--   {10, ms}        code frozen by a reseed for about ms more milliseconds
--   {11}            a token was due, but this Redis is no longer the history
--                   the shard was seeded in (a failover, a restart): the
--                   service recovers it from MongoDB first
--   {12, hold id, deadline ms}
--                   a code with a confirmation window (cw): the token is
--                   held for this email until the deadline (Redis' clock),
--                   a hold entry appended; the same answer, with the same
--                   hold and a fourth element 1, while it lives (a repeat)
--   {13, code}      this email's hold on code is past its deadline and not
--                   yet expired: the caller expires it (expire.lua), then
--                   asks again

local seeded = redis.call('GET', KEYS[1])
if not seeded then
  return {8}
end
if seeded ~= ARGV[7] then
  return {9, seeded}
end

local b = redis.call('HMGET', KEYS[2], 'tok', 'so', 'dis', 'exp', 'frz', 'ep', 'sl', 'cw')
if not b[1] then
  -- Carried tokens are dropped here: a vanished bucket can only strand
  -- capacity, never create it.
  return {7}
end

local tok = tonumber(b[1])
local carry = tonumber(ARGV[5])
-- Tokens taken before a reseed rebuilt the code (another epoch) are
-- dropped: the rebuild already counted every seat from MongoDB.
if carry > 0 and (b[6] or '0') == ARGV[8] and KEYS[7]
    and redis.call('SET', KEYS[7], '1', 'NX', 'PX', 600000) then
  redis.call('HINCRBY', KEYS[2], 'tok', carry)
  tok = tok + carry
  -- This shard holds tokens again: a sold-out mark or sweep lease on it
  -- must not turn its next callers away.
  redis.call('HSET', KEYS[2], 'so', 0)
  b[2] = '0'
end

-- The email's claim wins over every state of the code: a registered email
-- gets its answer (200 or 409) even when the code is full or closed.
local owner = redis.call('GET', KEYS[3])
if owner then
  if owner == ARGV[1] then
    -- WAIT's documented contract covers the writes of its own connection,
    -- and this claim may have been written on another one (an earlier
    -- attempt answered 503 when its WAIT timed out). Redis in fact sets a
    -- connection's WAIT offset after every command, reads included, so a
    -- WAIT right behind this script covers the claim already; the repeat
    -- writes it again (same value) so that 200 is answered only once the
    -- replicas hold it under the documented contract too.
    if ARGV[10] == '1' then
      redis.call('SET', KEYS[3], owner, 'KEEPTTL')
    end
    return {2}
  end
  local hcode, hdl, hid = string.match(owner, '^h|([^|]+)|(%d+)|([^|]+)|')
  if hcode then
    local t = redis.call('TIME')
    local snow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if tonumber(hdl) <= snow then
      return {13, hcode}
    end
    if hcode == ARGV[1] then
      if ARGV[10] == '1' then
        redis.call('SET', KEYS[3], owner, 'KEEPTTL') -- as for {2}, below
      end
      return {12, hid, hdl, 1}
    end
    return {3, hcode}
  end
  return {3, owner}
end

local now = tonumber(ARGV[4])
-- A reseed's freeze is timed by Redis' clock (see freeze.lua); TIME is
-- only read while a freeze mark is set.
local frz = tonumber(b[5])
if frz and frz > 0 then
  local t = redis.call('TIME')
  local snow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if frz > snow then
    return {10, frz - snow}
  end
end
if b[3] == '1' then
  return {6, 'disabled'}
end
local exp = tonumber(b[4])
if exp and exp > 0 and now >= exp then
  return {6, 'expired'}
end

if tok <= 0 then
  -- A requested mark (every shard was found empty) is set even over a
  -- sweep lease, which it replaces.
  local ttl = tonumber(ARGV[6])
  if ttl > 0 then
    redis.call('HSET', KEYS[2], 'so', now + ttl, 'sl', '')
    return {4}
  end
  local so = tonumber(b[2]) or 0
  local lease = tonumber(ARGV[9] or '0') or 0
  if so > now then
    -- The lease holder (sl: its email) is answered 5 again: a resend of
    -- its call after a lost reply must still sweep.
    if lease > 0 and b[7] == ARGV[2] then
      return {5}
    end
    return {4}
  end
  -- A mark that has just expired (so > 0; every script that adds tokens
  -- sets it to 0): this caller sweeps the other shards again, and the
  -- callers behind it keep the mark's answer for the lease instead of all
  -- sweeping at once. Without a mark (the code is filling) everyone sweeps:
  -- nobody is turned away while seats may be left.
  if so > 0 and lease > 0 then
    redis.call('HSET', KEYS[2], 'so', now + lease, 'sl', ARGV[2])
  end
  return {5}
end

-- Only a token taken needs the history check: every other answer is a
-- refusal or a claim, which a stale Redis can only get wrong towards
-- "no". A promoted replica or a restarted Redis has a new replication ID;
-- it may have lost the newest seats and claims, so nothing is handed out
-- until the service has rebuilt the shard from MongoDB and recorded the
-- new ID. A shard seeded by an older release has none recorded: it adopts
-- the current one.
local info = redis.pcall('INFO', 'replication')
local cur = type(info) == 'string' and string.match(info, 'master_replid:(%x+)')
if cur then
  local hist = redis.call('GET', KEYS[5])
  if not hist then
    redis.call('SET', KEYS[5], cur)
  elseif hist ~= cur then
    return {11}
  end
end

redis.call('HINCRBY', KEYS[2], 'tok', -1)
local cw = math.floor(tonumber(b[8] or '0') or 0)
if cw > 0 then
  -- A hold: the seat counts while it lives; confirm.lua makes it a
  -- registration, expire.lua gives it back once (to a bucket of the same
  -- epoch only: a rebuild in between counted it from MongoDB). The hold's
  -- entry (field h: its deadline) tells the reconciler to record the hold,
  -- not a registration.
  local t = redis.call('TIME')
  local dl = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + cw
  local id = redis.call('XADD', KEYS[4], '*', 'c', ARGV[1], 'k', ARGV[2], 'e', ARGV[3], 't', ARGV[4], 'h', dl)
  redis.call('SET', KEYS[3], 'h|' .. ARGV[1] .. '|' .. dl .. '|' .. id .. '|' .. (b[6] or '0'))
  redis.call('ZADD', KEYS[6], dl, ARGV[2])
  return {12, id, tostring(dl)}
end
redis.call('SET', KEYS[3], ARGV[1])
local id = redis.call('XADD', KEYS[4], '*', 'c', ARGV[1], 'k', ARGV[2], 'e', ARGV[3], 't', ARGV[4])
return {1, id}
