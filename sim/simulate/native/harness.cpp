// nitihw native simulation harness: the Verilated Datapath, driven from memory buffers.
//
// Python (nitihw.sim.simulate.native) loads this file's shared library with ctypes and hands it whole
// programs: the command words, the din beats and how many dout beats to collect. The cycle
// loop below is the protocol of DatapathDriver.execute (sim/simulate/datapath_driver.py), cycle for
// cycle: drive the inputs after a clock edge, let the logic settle, sample, clock. Commands
// and beats are presented as soon as the previous ones moved and dout is always ready, so
// the streams never stall the Datapath and the cycles are the schedule's.
//
// Every payload travels as little-endian 32-bit words, ceil(width / 32) per beat.

#include <cstdint>
#include <cstring>
#include <memory>

#include <type_traits>
#include <utility>

#include "Vdatapath.h"
#include "Vdatapath___024root.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

// Verilator spells the Verilog port "cmd__valid" as cmd___05Fvalid (it escapes "__").
#define PORT(stream, member) stream##___05F##member

namespace {

// Copy one beat between a word buffer and a Verilated port of any width.
inline void put(CData& d, const uint32_t* s) { d = static_cast<CData>(s[0]); }
inline void put(SData& d, const uint32_t* s) { d = static_cast<SData>(s[0]); }
inline void put(IData& d, const uint32_t* s) { d = s[0]; }
inline void put(QData& d, const uint32_t* s) { d = s[0] | (static_cast<QData>(s[1]) << 32); }
template <std::size_t N>
inline void put(VlWide<N>& d, const uint32_t* s) {
    for (std::size_t i = 0; i < N; ++i) d[i] = s[i];
}
// the low `words` words of a port (the others keep their value)
inline void put_low(CData& d, const uint32_t* s, int) { put(d, s); }
inline void put_low(SData& d, const uint32_t* s, int) { put(d, s); }
inline void put_low(IData& d, const uint32_t* s, int) { put(d, s); }
inline void put_low(QData& d, const uint32_t* s, int words) {
    d = words > 1 ? s[0] | (static_cast<QData>(s[1]) << 32) : (d & ~0xffffffffULL) | s[0];
}
template <std::size_t N>
inline void put_low(VlWide<N>& d, const uint32_t* s, int words) {
    for (int i = 0; i < words; ++i) d[i] = s[i];
}
inline void get(uint32_t* d, CData s) { d[0] = s; }
inline void get(uint32_t* d, SData s) { d[0] = s; }
inline void get(uint32_t* d, IData s) { d[0] = s; }
inline void get(uint32_t* d, QData s) {
    d[0] = static_cast<uint32_t>(s);
    d[1] = static_cast<uint32_t>(s >> 32);
}
template <std::size_t N>
inline void get(uint32_t* d, const VlWide<N>& s) {
    for (std::size_t i = 0; i < N; ++i) d[i] = s[i];
}
// Whether Verilator's root keeps the clock's previous value for its edge trigger under the
// name this Verilator gives it (see Harness::tick).
template <typename T, typename = void>
struct has_clk_trigger : std::false_type {};
template <typename T>
struct has_clk_trigger<T, std::void_t<decltype(std::declval<T&>().__Vtrigprevexpr___TOP__clk__0)>>
    : std::true_type {};

template <typename T>
constexpr int words_of(const T&) {
    return static_cast<int>((sizeof(T) + 3) / 4);
}
static_assert(sizeof(Vdatapath::PORT(dout, payload)) <= 4 * 64, "dout wider than 2048 bits");

struct Harness {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vdatapath> top;
    uint64_t cycle = 0;
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> trace;
#endif

    void dump() {
#if VM_TRACE
        if (trace) trace->dump(ctx->time());
#endif
    }
    // one clock period (10 time units, as in the cocotb testbenches): the rising edge, then
    // the clock falls. The design has only rising-edge logic, so the falling edge needs no
    // eval of its own: the model's edge detector is told the clock was low (its trigger's
    // previous value), which is all that eval would change. One eval a cycle is saved.
    void tick() {
        top->clk = 1;
        ctx->timeInc(5);
        top->eval();
        dump();
        top->clk = 0;
        ctx->timeInc(5);
        fall();
        ++cycle;
    }
    template <typename R = Vdatapath___024root>
    void fall() {
        if constexpr (has_clk_trigger<R>::value) {
            static_cast<R*>(top->rootp)->__Vtrigprevexpr___TOP__clk__0 = 0;  // R: dependent
        } else {
            top->eval();
        }
    }
    // let the logic settle on the inputs just driven
    void settle() {
        top->eval();
        dump();
    }
};

}  // namespace

extern "C" {

// Words per beat of the command, din and dout payloads (0, 1, 2), so Python can check them.
int nh_words(int stream) {
    Vdatapath* probe = nullptr;
    switch (stream) {
        case 0: return words_of(probe->PORT(cmd, payload));
        case 1: return words_of(probe->PORT(din, payload));
        case 2: return words_of(probe->PORT(dout, payload));
        default: return -1;
    }
}

int nh_has_trace() { return VM_TRACE; }

// A new simulator instance; waves (VCD) to wave_path when not empty (traced builds only).
void* nh_open(const char* wave_path) {
    auto* h = new Harness;
    h->ctx = std::make_unique<VerilatedContext>();
    h->ctx->commandArgs(0, static_cast<const char**>(nullptr));
#if VM_TRACE
    if (wave_path && *wave_path) h->ctx->traceEverOn(true);
#endif
    h->top = std::make_unique<Vdatapath>(h->ctx.get(), "datapath");
#if VM_TRACE
    if (wave_path && *wave_path) {
        h->trace = std::make_unique<VerilatedVcdC>();
        h->top->trace(h->trace.get(), 99);
        h->trace->open(wave_path);
    }
#else
    (void)wave_path;
#endif
    return h;
}

void nh_close(void* p) {
    auto* h = static_cast<Harness*>(p);
    if (!h) return;
    h->top->final();
#if VM_TRACE
    if (h->trace) h->trace->close();
#endif
    delete h;
}

// Idle inputs, the synchronous reset held for `cycles` edges, then one more edge: what
// start_clock_and_reset does in the cocotb testbenches. The top (build.py's wrapper) takes
// the reset through a register, so the Datapath sees it one edge later: one edge more here.
void nh_reset(void* p, int cycles) {
    auto* h = static_cast<Harness*>(p);
    Vdatapath* t = h->top.get();
    t->PORT(cmd, valid) = 0;
    t->PORT(din, valid) = 0;
    t->PORT(dout, ready) = 1;
    t->clk = 0;
    t->rst = 1;
    h->settle();
    for (int i = 0; i < cycles; ++i) h->tick();
    t->rst = 0;
    h->tick();
    h->tick();
}

uint64_t nh_cycle(void* p) { return static_cast<Harness*>(p)->cycle; }

// Run one program. info[0..3] receives: the cycle its first command was accepted, the first
// cycle the Datapath was idle again, its error flag and error opcode there. Returns 0; -1
// when no transfer happened for `watchdog` cycles while the program still had work (a
// program that expects more dout beats than its commands produce; info then holds the
// commands, din beats and dout beats moved and the cycle); -2 (`checked` only) when an
// output changed with the inputs of its own cycle (info[3]: the cycle).
//
// One eval a cycle, the rising edge's: the Datapath's handshakes, dout and busy come from
// registers (cmd.ready is its queue's, din.ready and dout.valid its units' and its skid
// buffer's), so the outputs settled after a rising edge hold for the whole next cycle,
// whatever the inputs; the edge's eval settles the new inputs before it clocks them in.
// With `checked`, every cycle is also settled on its inputs before sampling and the outputs
// compared with those after the edge: that property tested (a second eval a cycle).
//
// `din` holds `din_words` words a beat (at most the port's): a program whose beats use only
// the low words of the payload (a GEMM's A and B fields) passes just those, the rest is 0.
int nh_run(void* p, const uint32_t* cmds, uint64_t n_cmd, const uint32_t* din, uint64_t n_in,
           int din_words, uint32_t* dout, uint64_t n_out, uint64_t watchdog, int checked,
           uint64_t* info) {
    auto* h = static_cast<Harness*>(p);
    Vdatapath* t = h->top.get();
    const int wc = words_of(t->PORT(cmd, payload));
    const int wo = words_of(t->PORT(dout, payload));
    const int wi = din_words;
    if (wi < 1 || wi > words_of(t->PORT(din, payload))) return -3;
    {
        uint32_t zero[(sizeof(Vdatapath::PORT(din, payload)) + 3) / 4] = {};
        put(t->PORT(din, payload), zero);
    }
    uint64_t i = 0, j = 0, k = 0, idle = 0;
    int64_t start = -1;
    t->PORT(dout, ready) = 1;
    while (i < n_cmd || j < n_in || k < n_out) {
        t->PORT(cmd, valid) = i < n_cmd;
        if (i < n_cmd) put(t->PORT(cmd, payload), cmds + i * wc);
        t->PORT(din, valid) = j < n_in;
        if (j < n_in) put_low(t->PORT(din, payload), din + j * wi, wi);
        if (checked) {
            uint32_t before[64];
            get(before, t->PORT(dout, payload));
            const bool r0 = t->PORT(cmd, ready), r1 = t->PORT(din, ready);
            const bool v0 = t->PORT(dout, valid), b0 = t->busy;
            h->settle();
            uint32_t after[64];
            get(after, t->PORT(dout, payload));
            const int moved = (r0 != bool(t->PORT(cmd, ready))) |
                              (r1 != bool(t->PORT(din, ready))) << 1 |
                              (v0 != bool(t->PORT(dout, valid))) << 2 |
                              (b0 != bool(t->busy)) << 3 |
                              (v0 && std::memcmp(before, after, 4 * wo) != 0) << 4;
            if (moved) {
                info[2] = moved;
                info[3] = h->cycle;
                return -2;
            }
        }
        const bool took_cmd = i < n_cmd && t->PORT(cmd, ready);
        const bool took_din = j < n_in && t->PORT(din, ready);
        const bool got = k < n_out && t->PORT(dout, valid);
        if (got) get(dout + (k++) * wo, t->PORT(dout, payload));
        if (took_cmd && start < 0) start = static_cast<int64_t>(h->cycle);
        h->tick();
        i += took_cmd;
        j += took_din;
        if (took_cmd || took_din || got) {
            idle = 0;
        } else if (++idle > watchdog) {
            t->PORT(cmd, valid) = 0;
            t->PORT(din, valid) = 0;
            info[0] = i;
            info[1] = j;
            info[2] = k;
            info[3] = h->cycle;
            return -1;
        }
    }
    t->PORT(cmd, valid) = 0;
    t->PORT(din, valid) = 0;
    while (t->busy) h->tick();
    const uint64_t end = h->cycle;
    info[0] = start < 0 ? end : static_cast<uint64_t>(start);
    info[1] = end;
    info[2] = t->error;
    info[3] = t->error_op;
    h->tick();
    return 0;
}

}  // extern "C"
