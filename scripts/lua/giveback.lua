-- giveback.lua: undo a reservation that MongoDB refused because the email
-- already belongs to another code (possible only after Redis lost data).
--
-- KEYS[1] token bucket {ns:s}:b:<code>
-- KEYS[2] email claim  {ns:s}:e:<canon>
-- KEYS[3] done marker  {ns:s}:g:<stream id>
-- ARGV[1] code of the refused reservation  ARGV[2] code MongoDB holds
-- ARGV[3] marker TTL in ms
-- Reply: 1 token returned, 0 already done (a redelivered entry).
--
-- The marker makes a redelivery after a crash a no-op, so a token is
-- returned at most once per reservation.

if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[3]) == false then
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'tok', 1)
  redis.call('HSET', KEYS[1], 'so', 0)
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
