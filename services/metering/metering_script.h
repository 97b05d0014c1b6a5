/*  metering_script: the Lua source of every session transition
    (metering.lua, embedded). One script, loaded once and called by SHA,
    dispatching on its first argument: create, rebuild, tick, fund, start,
    hb, pause, resume, end, jmark, fin. Each call touches one session key
    only, so it runs unchanged on Redis Cluster.
*/
#ifndef METERING_SCRIPT_H_INCLUDED
#define METERING_SCRIPT_H_INCLUDED

extern const char metering_script_lua[];

#endif
