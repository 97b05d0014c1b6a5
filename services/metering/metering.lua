-- One session's transitions, atomically. KEYS[1] = "{s:<sid>}".
-- ARGV[1] op, ARGV[2] now (ppm ms), ARGV[3] tenant ("" = any), then op args.
-- Reply: {code, message, flags, next, nev, events (9 each)..., hash pairs...}
-- flags: 1 already, 2 journal due (j < q), 4 finalize due, 8 gone.
local k = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local S = {}
local W = {}
local EV = {}
local PAID, MANUAL, PPAUSE = 1, 16, 32
local RN = {'payer', 'payee', 'platform', 'expired', 'stale', 'max_session'}
local function I(v) return string.format('%d', v) end
local function num(f) return tonumber(S[f] or '0') or 0 end
local function set(f, v)
  if type(v) == 'number' then v = I(v) end
  S[f] = v
  W[#W + 1] = f
  W[#W + 1] = v
end
local function flag(b) return math.floor(num('o') / b) % 2 == 1 end
local function setflag(b, on)
  if flag(b) ~= on then
    if on then set('o', num('o') + b) else set('o', num('o') - b) end
  end
end
local function marks()
  local m = {}
  for x in string.gmatch(S.w or '', '%d+') do m[#m + 1] = tonumber(x) end
  return m
end
local function used_at(t)
  if num('s') == 2 then return num('u') + math.max(0, t - num('v')) end
  return num('u')
end
local function emit(name, at, mark, added, reason)
  local q = num('q') + 1
  set('q', q)
  local used = used_at(at)
  local rem = 0
  if flag(PAID) then rem = math.max(0, num('f') - used) end
  local e = {name, q, num('s'), at, used, rem, mark or 0, added or 0, reason or ''}
  for i = 1, 9 do EV[#EV + 1] = e[i] end
end
-- Marks still ahead of a remaining time are armed again (after a top-up).
local function rearm_marks(rem)
  local m = marks()
  local y = 0
  while y < #m and m[y + 1] * 1000 >= rem do y = y + 1 end
  set('y', y)
end
local function finish(at, reason)
  local s = num('s')
  if s == 2 then
    local u = num('u') + math.max(0, at - num('v'))
    if flag(PAID) and u > num('f') then u = num('f') end
    set('u', u)
  end
  set('s', 5)
  set('e', at)
  set('n', reason)
  emit('session.ended', at, 0, 0, RN[reason] or '')
end
-- Brings the session up to time t: every due warning, expiry, pause, TTL
-- in time order, each exactly once.
local function advance(t)
  for _ = 1, 64 do
    local s = num('s')
    local h, g, x = num('h'), num('g') * 1000, num('x') * 1000
    if s == 1 or s == 3 then
      if x > 0 and h + x <= t then finish(h + x, 5) else return end
    elseif s == 2 then
      local v, u, f = num('v'), num('u'), num('f')
      local paid = flag(PAID)
      local te, tw, tg, tt = nil, nil, nil, nil
      if paid then
        te = v + f - u
        local m = marks()
        local y = num('y')
        if y < #m then tw = te - m[y + 1] * 1000 end
      elseif num('m') > 0 then
        te = v + num('m') * 60000 - u
      end
      if g > 0 then tg = h + g elseif x > 0 then tt = h + x end
      local best, what = nil, nil
      if tw and tw <= t then best, what = tw, 'w' end
      if te and te <= t and (not best or te < best) then best, what = te, 'e' end
      if tg and tg <= t and (not best or tg < best) then best, what = tg, 'g' end
      if tt and tt <= t and (not best or tt < best) then best, what = tt, 't' end
      if not what then return end
      if what == 'w' then
        local m = marks()
        local y = num('y')
        set('y', y + 1)
        emit('session.warning', best, m[y + 1], 0, '')
      elseif what == 'e' then
        if paid then
          set('u', f)
          set('s', 4)
          set('e', best)
          set('n', 4)
          emit('session.expired', best, 0, 0, 'expired')
        else
          finish(best, 6)
        end
      elseif what == 'g' then
        set('u', u + math.max(0, best - v))
        set('s', 3)
        emit('session.paused', best, 0, 0, 'grace')
      else
        finish(best, 5)
      end
    else
      return
    end
  end
end
local function nextdl()
  local s = num('s')
  local h, g, x = num('h'), num('g') * 1000, num('x') * 1000
  local best = -1
  local function cand(t) if best < 0 or t < best then best = t end end
  if s == 1 or s == 3 then
    if x > 0 then cand(h + x) end
  elseif s == 2 then
    local v, u, f = num('v'), num('u'), num('f')
    if flag(PAID) then
      local te = v + f - u
      cand(te)
      local m = marks()
      local y = num('y')
      if y < #m then cand(te - m[y + 1] * 1000) end
    elseif num('m') > 0 then
      cand(v + num('m') * 60000 - u)
    end
    if g > 0 then cand(h + g) elseif x > 0 then cand(h + x) end
  elseif S.Z ~= '1' then
    if s == 4 then cand(num('e') + g) else cand(num('e')) end
  end
  return best
end
-- lean: 'tick' leaves the snapshot out when nothing happened that needs
-- it; 'none' always leaves it out.
local function reply(flags, lean)
  if #W > 0 then redis.call('HSET', k, unpack(W)) end
  if num('j') < num('q') then flags = flags + 2 end
  local s = num('s')
  if S.Z ~= '1' and (s == 5 or (s == 4 and num('e') + num('g') * 1000 <= now)) then
    flags = flags + 4
  end
  local r = {0, '', flags, nextdl(), #EV / 9}
  for i = 1, #EV do r[#r + 1] = EV[i] end
  if lean == 'none' or (lean == 'tick' and #EV == 0 and flags % 8 < 2) then return r end
  for f, v in pairs(S) do
    r[#r + 1] = f
    r[#r + 1] = v
  end
  return r
end
local function fail(code, msg) return {code, msg, 0, -1, 0} end

if op == 'create' then
  if redis.call('EXISTS', k) == 1 then return fail(6, 'session exists') end
  for i = 4, #ARGV, 2 do set(ARGV[i], ARGV[i + 1]) end
  if num('s') == 2 then emit('session.active', now, 0, num('f'), 'created') end
  return reply(0)
end
if op == 'rebuild' then
  if redis.call('EXISTS', k) == 1 then return fail(6, 'present') end
  for i = 4, #ARGV, 2 do set(ARGV[i], ARGV[i + 1]) end
  return reply(0)
end

local raw = redis.call('HGETALL', k)
if #raw == 0 then
  if op == 'tick' then return {0, '', 8, -1, 0} end
  return fail(5, 'session not found')
end
for i = 1, #raw, 2 do S[raw[i]] = raw[i + 1] end
if ARGV[3] ~= '' and S.t ~= ARGV[3] then return fail(5, 'session not found') end

if op == 'tick' then
  advance(now)
  return reply(0, 'tick')
end
if op == 'jmark' then
  if num('j') < tonumber(ARGV[4]) then set('j', tonumber(ARGV[4])) end
  return reply(0, 'none')
end
if op == 'fin' then
  local s = num('s')
  if S.Z == '1' then return reply(1, 'none') end
  if s == 5 or (s == 4 and num('e') + num('g') * 1000 <= now) then
    set('Z', '1')
    redis.call('HSET', k, unpack(W))
    W = {}
    redis.call('PEXPIRE', k, tonumber(ARGV[4]))
    return reply(0, 'none')
  end
  return fail(9, 'not finished')
end

-- Party checks: ARGV[4] by (payer|payee|platform), ARGV[5] actor, ARGV[6] at.
local function party()
  local by = ARGV[4]
  if by == 'payer' and ARGV[5] ~= S.a then return 'actor is not the payer' end
  if by == 'payee' and ARGV[5] ~= S.b then return 'actor is not the payee' end
  return nil
end

if op == 'fund' then
  -- ARGV[4] payment field (metering_payment_field), [5] add_ms, [6] amount, [7] currency
  advance(now)
  local pf = ARGV[4]
  if S[pf] then return reply(1) end
  local s = num('s')
  if s == 5 or (s == 4 and (S.Z == '1' or num('e') + num('g') * 1000 <= now)) then
    return fail(9, 'session has ended')
  end
  if not flag(PAID) then return fail(9, 'session is free') end
  if ARGV[7] ~= S.c then return fail(3, 'currency: must be the session currency ' .. S.c) end
  local add = tonumber(ARGV[5])
  local cap = num('m') * 60000
  if cap > 0 and num('f') + add > cap then
    return fail(11, 'minutes: more than max_session_minutes allows')
  end
  set('f', num('f') + add)
  set('M', num('M') + tonumber(ARGV[6]))
  set(pf, add)
  if s == 1 then
    if flag(MANUAL) then
      emit('session.extended', now, 0, add, 'funded')
    else
      set('s', 2)
      set('v', now)
      set('h', now)
      rearm_marks(num('f') - num('u'))
      emit('session.active', now, 0, add, 'funded')
    end
  elseif s == 4 then
    set('s', 2)
    set('v', now)
    set('h', now)
    set('e', 0)
    set('n', 0)
    rearm_marks(num('f') - num('u'))
    emit('session.active', now, 0, add, 'reopened')
  else
    rearm_marks(num('f') - used_at(now))
    emit('session.extended', now, 0, add, 'funded')
  end
  return reply(0)
end

local perr = party()
if perr then return fail(7, perr) end
local at = tonumber(ARGV[6])
if at <= 0 then at = now end
if at > now then return fail(3, 'at_ms: lies in the future') end

if op == 'start' then
  advance(now)
  local s = num('s')
  if s == 2 then return reply(1) end
  if s ~= 1 then return fail(9, 'session is not awaiting its start') end
  if flag(PAID) and num('f') <= 0 then return fail(9, 'session has no paid time') end
  set('s', 2)
  set('v', now)
  set('h', now)
  rearm_marks(num('f') - num('u'))
  emit('session.active', now, 0, 0, 'started')
  return reply(0)
end
if op == 'hb' then
  if at < num('h') then return fail(3, 'at_ms: time going backwards') end
  advance(at)
  local s = num('s')
  if s == 4 then return fail(9, 'session has expired') end
  if s == 5 then return fail(9, 'session has ended') end
  if s == 3 and not flag(PPAUSE) then
    set('s', 2)
    set('v', at)
    set('h', at)
    emit('session.resumed', at, 0, 0, 'heartbeat')
  else
    set('h', at)
  end
  advance(now)
  return reply(0)
end
if op == 'pause' then
  advance(now)
  local s = num('s')
  if s == 3 then
    setflag(PPAUSE, true)
    return reply(1)
  end
  if s ~= 2 then return fail(9, 'session is not active') end
  set('u', used_at(now))
  set('s', 3)
  setflag(PPAUSE, true)
  emit('session.paused', now, 0, 0, 'platform')
  return reply(0)
end
if op == 'resume' then
  advance(now)
  local s = num('s')
  if s == 2 then return reply(1) end
  if s ~= 3 then return fail(9, 'session is not paused') end
  setflag(PPAUSE, false)
  set('s', 2)
  set('v', now)
  set('h', now)
  emit('session.resumed', now, 0, 0, 'platform')
  return reply(0)
end
if op == 'end' then
  -- ARGV[7] reason code
  local s = num('s')
  if s == 2 and at < num('v') then return fail(3, 'at_ms: time going backwards') end
  if (s == 2 or s == 1) and at < num('h') then return fail(3, 'at_ms: time going backwards') end
  advance(at)
  s = num('s')
  if s == 5 then return reply(1) end
  if s == 4 then
    set('s', 5)
    emit('session.ended', at, 0, 0, 'expired')
    return reply(0)
  end
  finish(at, tonumber(ARGV[7]))
  return reply(0)
end
return fail(3, 'unknown op ' .. op)
