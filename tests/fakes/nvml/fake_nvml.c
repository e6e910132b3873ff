/* fake_nvml.c - a tiny stand-in for libnvidia-ml.so.1 so that pynvml / nvidia-ml-py can run
 * without a GPU.  Build:  gcc -shared -fPIC -O2 -o libnvidia-ml.so.1 fake_nvml.c
 * Use:    LD_LIBRARY_PATH=/path/to/dir python -c "import pynvml; pynvml.nvmlInit()"
 * Config (read on every call, so tests can change values at run time):
 *   FAKE_NVML_COUNT   number of GPUs (default 1)
 *   FAKE_NVML_DIR     directory; power<i> holds milliwatts, energy<i> millijoules,
 *                     util<i> GPU utilisation percent (ASCII integers).  Missing file -> defaults.
 *   FAKE_NVML_POWER_MW default power in mW when no file (default 100000)
 * Additions in this copy (kcloud-opt-predictor tests; see README.md):
 *   limit<i>  enforced power limit in mW (already read by the original, now documented)
 *   temp<i>   temperature in C (already read by the original, now documented)
 *   memused<i> used memory in MiB (of 81920 MiB total; default 0)
 *   energy<i> holding a negative number -> nvmlDeviceGetTotalEnergyConsumption says Not Supported
 *   fail<i>   an NVML return code (e.g. 15 = GPU is lost) that nvmlDeviceGetPowerUsage returns instead
 *   handlefail<i> an NVML return code that nvmlDeviceGetHandleByIndex returns for GPU i (a GPU lost at start)
 *   memfail<i> an NVML return code that nvmlDeviceGetMemoryInfo returns instead (e.g. 4 = No Permission, as a MIG
 *             GPU in a container answers: NVIDIA/nvidia-container-toolkit#842)
 *   uuid<i>   the number that ends GPU i's UUID (default i), as another container on the same host would
 *             see a different GPU at index 0; a negative number -> nvmlDeviceGetUUID says Not Supported
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
typedef struct fake_dev { unsigned int index; } *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;

#define OK 0
#define ERR_UNINIT 1
#define ERR_INVALID 2
#define ERR_NOT_SUPPORTED 3
#define ERR_INSUFFICIENT 7
#define MAXGPU 64
static struct fake_dev devs[MAXGPU];
static int inited = 0;

static unsigned int count(void) {
    const char *c = getenv("FAKE_NVML_COUNT");
    int n = c ? atoi(c) : 1;
    if (n < 0) n = 0;
    if (n > MAXGPU) n = MAXGPU;
    return (unsigned int)n;
}
static long long read_val(const char *what, unsigned int idx, long long dflt) {
    const char *d = getenv("FAKE_NVML_DIR");
    if (!d) return dflt;
    char p[4096]; snprintf(p, sizeof p, "%s/%s%u", d, what, idx);
    FILE *f = fopen(p, "r"); if (!f) return dflt;
    long long v = dflt; if (fscanf(f, "%lld", &v) != 1) v = dflt; fclose(f); return v;
}
static int valid(nvmlDevice_t d) { return d && d >= devs && d < devs + count(); }
static nvmlReturn_t copy_str(const char *s, char *buf, unsigned int len) {
    if (!buf) return ERR_INVALID;
    if (strlen(s) + 1 > len) return ERR_INSUFFICIENT;
    strcpy(buf, s); return OK;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; for (int i = 0; i < MAXGPU; i++) devs[i].index = i; inited = 1; return OK; }
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) { inited = 0; return OK; }
const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) { case OK: return "Success"; case ERR_UNINIT: return "Uninitialized";
    case ERR_INVALID: return "Invalid Argument"; case ERR_NOT_SUPPORTED: return "Not Supported";
    case ERR_INSUFFICIENT: return "Insufficient Size"; default: return "Unknown Error"; }
}
nvmlReturn_t nvmlSystemGetDriverVersion(char *v, unsigned int n) { return copy_str("999.99.99-fake", v, n); }
nvmlReturn_t nvmlSystemGetNVMLVersion(char *v, unsigned int n) { return copy_str("99.999.99-fake", v, n); }
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) { if (!v) return ERR_INVALID; *v = 12040; return OK; }
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { return nvmlSystemGetCudaDriverVersion(v); }
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) { if (!inited) return ERR_UNINIT; if (!n) return ERR_INVALID; *n = count(); return OK; }
nvmlReturn_t nvmlDeviceGetCount(unsigned int *n) { return nvmlDeviceGetCount_v2(n); }
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
    if (!inited) return ERR_UNINIT;
    if (!d || i >= count()) return ERR_INVALID;
    long long fail = read_val("handlefail", i, 0);
    if (fail) return (nvmlReturn_t)fail;
    *d = &devs[i]; return OK; }
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, nvmlDevice_t *d) { return nvmlDeviceGetHandleByIndex_v2(i, d); }
nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *i) { if (!valid(d) || !i) return ERR_INVALID;
    *i = d->index; return OK; }
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *buf, unsigned int n) { if (!valid(d)) return ERR_INVALID;
    return copy_str("Fake NVIDIA GPU", buf, n); }
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *buf, unsigned int n) {
    if (!valid(d)) return ERR_INVALID;
    long long serial = read_val("uuid", d->index, d->index);
    if (serial < 0) return ERR_NOT_SUPPORTED;
    char s[80];
    snprintf(s, sizeof s, "GPU-00000000-0000-0000-0000-%012lld", serial); return copy_str(s, buf, n); }
nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    if (!valid(d) || !mw) return ERR_INVALID;
    long long fail = read_val("fail", d->index, 0);
    if (fail) return (nvmlReturn_t)fail;
    const char *e = getenv("FAKE_NVML_POWER_MW");
    *mw = (unsigned int)read_val("power", d->index, e ? atoll(e) : 100000); return OK; }
nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    if (!valid(d) || !mj) return ERR_INVALID;
    long long e = read_val("energy", d->index, 0);
    if (e < 0) return ERR_NOT_SUPPORTED;
    *mj = (unsigned long long)e; return OK; }
nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *mw) {
    if (!valid(d) || !mw) return ERR_INVALID;
    *mw = (unsigned int)read_val("limit", d->index, 700000); return OK; }
nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t d, unsigned int *mw) { return nvmlDeviceGetEnforcedPowerLimit(d, mw); }
nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *t) {
    (void)sensor; if (!valid(d) || !t) return ERR_INVALID;
    *t = (unsigned int)read_val("temp", d->index, 40); return OK; }
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    if (!valid(d) || !u) return ERR_INVALID;
    u->gpu = (unsigned int)read_val("util", d->index, 0); u->memory = 0; return OK; }
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    if (!valid(d) || !m) return ERR_INVALID;
    long long fail = read_val("memfail", d->index, 0);
    if (fail) return (nvmlReturn_t)fail;
    m->total = 80ULL << 30;
    m->used = (unsigned long long)read_val("memused", d->index, 0) << 20;
    if (m->used > m->total) m->used = m->total;
    m->free = m->total - m->used; return OK; }
