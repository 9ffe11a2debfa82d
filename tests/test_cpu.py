"""edgepipe.cpu: /proc/cpuinfo read in one place, and one answer to "does this CPU compute bf16"."""

from __future__ import annotations

from edgepipe.cpu import cpu_info, native_bf16

X86 = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel Xeon\n"
    "stepping\t: 8\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\nprocessor\t: 1\nflags\t\t: other\n"
)
ARM = "processor\t: 0\nFeatures\t: fp asimd asimddp\n\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"


def test_the_first_processor_block_gives_vendor_model_and_flags(tmp_path):
    (tmp_path / "x86").write_text(X86)
    info = cpu_info(tmp_path / "x86")
    ids = (info["vendor"], info["family"], info["model"], info["stepping"])
    assert ids == ("GenuineIntel", "6", "143", "8")
    assert info["model_name"] == "Intel Xeon" and info["flags"] == ["fpu", "avx2", "avx512_bf16", "amx_bf16"]
    (tmp_path / "arm").write_text(ARM)
    assert cpu_info(tmp_path / "arm")["flags"] == ["fp", "asimd", "asimddp"]
    assert cpu_info(tmp_path / "missing")["flags"] == []


def test_native_bf16_needs_avx512_bf16_or_amx_bf16():
    assert native_bf16({"avx2", "avx512_bf16"}) and native_bf16({"amx_bf16"})
    assert not native_bf16({"avx2", "avx512f", "avx512_vnni"}) and not native_bf16(set())
