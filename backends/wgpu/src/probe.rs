//! What wgpu does not tell: the Vulkan device's extensions and properties, read with `ash`. Used for
//! `dsv3 devices` (capabilities().features), for the reason when no adapter is found (is there a loader?
//! a driver?), and to choose kernel variants (a cooperative-matrix GEMM where the extension exists).
//!
//! All `unsafe` of this crate is in this file: the Vulkan loader is opened at run time and called through
//! ash's raw bindings.

use ash::vk;

/// One Vulkan physical device as the driver describes it.
#[derive(Clone, Debug, Default)]
pub struct VulkanDevice {
    pub name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub device_type: String,
    pub api_version: String,
    pub driver: String,
    pub extensions: Vec<String>,
    /// Sizes of the DEVICE_LOCAL heaps, bytes.
    pub device_local_heaps: Vec<u64>,
    pub subgroup_size: u32,
    /// VK_EXT_subgroup_size_control: the range of sizes a pipeline may require.
    pub subgroup_size_range: Option<(u32, u32)>,
    /// VK_KHR_cooperative_matrix: "MxNxK A/B→C/Result" per supported configuration.
    pub cooperative_matrix: Vec<String>,
}

impl VulkanDevice {
    pub fn has(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }

    /// The entries worth showing in `dsv3 devices` (and the ones kernel selection looks at).
    pub fn features(&self) -> Vec<String> {
        let mut f = vec![format!("vulkan {}", self.api_version), format!("driver {}", self.driver)];
        for ext in [
            "VK_KHR_cooperative_matrix",
            "VK_NV_cooperative_matrix2",
            "VK_KHR_shader_bfloat16",
            "VK_EXT_shader_float8",
            "VK_KHR_shader_float16_int8",
            "VK_KHR_16bit_storage",
            "VK_KHR_8bit_storage",
            "VK_EXT_subgroup_size_control",
            "VK_KHR_shader_integer_dot_product",
        ] {
            if self.has(ext) {
                f.push(ext.to_string());
            }
        }
        let absent: Vec<&str> =
            ["VK_KHR_cooperative_matrix", "VK_KHR_shader_bfloat16", "VK_EXT_shader_float8"]
                .into_iter()
                .filter(|e| !self.has(e))
                .collect();
        if !absent.is_empty() {
            f.push(format!("absent: {}", absent.join(" ")));
        }
        if let Some((lo, hi)) = self.subgroup_size_range {
            f.push(format!("subgroup sizes {lo}..{hi}"));
        }
        for c in &self.cooperative_matrix {
            f.push(format!("coopmat {c}"));
        }
        if !self.device_local_heaps.is_empty() {
            let heaps: Vec<String> = self
                .device_local_heaps
                .iter()
                .map(|b| format!("{:.1}GiB", *b as f64 / (1u64 << 30) as f64))
                .collect();
            f.push(format!("device-local heaps {}", heaps.join("+")));
        }
        f
    }
}

/// The Vulkan view of the machine: the devices, or why there are none.
#[derive(Clone, Debug)]
pub enum Probe {
    Devices(Vec<VulkanDevice>),
    /// No loader (`libvulkan.so.1`), no driver (ICD), or instance creation failed: the reason.
    Absent(String),
}

impl Probe {
    pub fn find(&self, vendor_id: u32, device_id: u32, name: &str) -> Option<&VulkanDevice> {
        match self {
            Probe::Devices(d) => d
                .iter()
                .find(|v| v.vendor_id == vendor_id && v.device_id == device_id && v.name == name)
                .or_else(|| d.iter().find(|v| v.name == name)),
            Probe::Absent(_) => None,
        }
    }
}

fn cstr(bytes: &[std::ffi::c_char]) -> String {
    // The driver fills these arrays NUL-terminated (the Vulkan spec requires it); an unterminated array
    // is read up to its length by `to_string_lossy` on the bytes, never past it.
    let raw: Vec<u8> = bytes.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&raw).into_owned()
}

fn version(v: u32) -> String {
    format!("{}.{}.{}", vk::api_version_major(v), vk::api_version_minor(v), vk::api_version_patch(v))
}

fn component(t: vk::ComponentTypeKHR) -> &'static str {
    match t {
        vk::ComponentTypeKHR::FLOAT16 => "f16",
        vk::ComponentTypeKHR::FLOAT32 => "f32",
        vk::ComponentTypeKHR::FLOAT64 => "f64",
        vk::ComponentTypeKHR::SINT8 => "i8",
        vk::ComponentTypeKHR::UINT8 => "u8",
        vk::ComponentTypeKHR::SINT32 => "i32",
        vk::ComponentTypeKHR::UINT32 => "u32",
        _ => "other",
    }
}

/// Opens the Vulkan loader, lists the physical devices with their extensions and properties, and closes
/// everything again. Never panics: every failure becomes `Probe::Absent` with the reason.
pub fn probe() -> Probe {
    // SAFETY: `Entry::load` dlopens the system's Vulkan loader; ash checks that the symbols it needs
    // exist and returns an error otherwise. The loader is kept alive by `entry` for the whole function.
    let entry = match unsafe { ash::Entry::load() } {
        Ok(e) => e,
        Err(e) => return Probe::Absent(format!("no Vulkan loader (libvulkan.so.1): {e}")),
    };
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_1);
    let create = vk::InstanceCreateInfo::default().application_info(&app);
    // SAFETY: `create` and `app` outlive the call; no extensions or layers are requested.
    let instance = match unsafe { entry.create_instance(&create, None) } {
        Ok(i) => i,
        Err(e) => return Probe::Absent(format!("vkCreateInstance failed ({e}): no usable Vulkan driver")),
    };
    let result = devices(&entry, &instance);
    // SAFETY: every object made from `instance` was dropped inside `devices` (physical devices are not
    // owned); the instance is destroyed exactly once, after its last use.
    unsafe { instance.destroy_instance(None) };
    match result {
        Ok(d) if d.is_empty() => {
            Probe::Absent("the Vulkan loader found no physical device (no driver / ICD installed)".into())
        }
        Ok(d) => Probe::Devices(d),
        Err(e) => Probe::Absent(format!("vkEnumeratePhysicalDevices failed: {e}")),
    }
}

fn devices(entry: &ash::Entry, instance: &ash::Instance) -> Result<Vec<VulkanDevice>, vk::Result> {
    // SAFETY: `instance` is a live instance created above.
    let physical = unsafe { instance.enumerate_physical_devices()? };
    let coop = ash::khr::cooperative_matrix::Instance::new(entry, instance);
    let mut out = Vec::new();
    for pd in physical {
        // SAFETY (this block): `pd` was returned by this instance; the property structs are plain
        // out-parameters whose p_next chains point at locals that live until the calls return.
        let props = unsafe { instance.get_physical_device_properties(pd) };
        let extensions: Vec<String> = unsafe { instance.enumerate_device_extension_properties(pd) }
            .unwrap_or_default()
            .iter()
            .map(|e| cstr(&e.extension_name))
            .collect();
        let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
        let mut size_control = vk::PhysicalDeviceSubgroupSizeControlProperties::default();
        let has_size_control = extensions.iter().any(|e| e == "VK_EXT_subgroup_size_control")
            || props.api_version >= vk::API_VERSION_1_3;
        // vkGetPhysicalDeviceProperties2 is core in Vulkan 1.1; a 1.0-only driver is left at the defaults.
        if props.api_version >= vk::API_VERSION_1_1 {
            let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut subgroup);
            if has_size_control {
                props2 = props2.push_next(&mut size_control);
            }
            unsafe { instance.get_physical_device_properties2(pd, &mut props2) };
        }
        let memory = unsafe { instance.get_physical_device_memory_properties(pd) };
        let device_local_heaps = memory.memory_heaps[..memory.memory_heap_count as usize]
            .iter()
            .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
            .map(|h| h.size)
            .collect();
        let mut cooperative_matrix = Vec::new();
        if extensions.iter().any(|e| e == "VK_KHR_cooperative_matrix") {
            let configs = unsafe { coop.get_physical_device_cooperative_matrix_properties(pd) };
            for c in configs.unwrap_or_default() {
                cooperative_matrix.push(format!(
                    "{}x{}x{} {}/{}→{}",
                    c.m_size,
                    c.n_size,
                    c.k_size,
                    component(c.a_type),
                    component(c.b_type),
                    component(c.result_type)
                ));
            }
        }
        let subgroup_size_range = (has_size_control && size_control.max_subgroup_size > 0)
            .then_some((size_control.min_subgroup_size, size_control.max_subgroup_size));
        out.push(VulkanDevice {
            name: cstr(&props.device_name),
            vendor_id: props.vendor_id,
            device_id: props.device_id,
            device_type: format!("{:?}", props.device_type),
            api_version: version(props.api_version),
            driver: format!("{:#x}", props.driver_version),
            extensions,
            device_local_heaps,
            subgroup_size: subgroup.subgroup_size,
            subgroup_size_range,
            cooperative_matrix,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_strings_stop_at_nul_and_at_the_end() {
        let bytes: Vec<std::ffi::c_char> = b"llvmpipe\0junk".iter().map(|&b| b as std::ffi::c_char).collect();
        assert_eq!(cstr(&bytes), "llvmpipe");
        let full: Vec<std::ffi::c_char> = b"abc".iter().map(|&b| b as std::ffi::c_char).collect();
        assert_eq!(cstr(&full), "abc");
    }

    #[test]
    fn features_name_what_is_absent() {
        let d = VulkanDevice {
            extensions: vec!["VK_KHR_16bit_storage".into()],
            api_version: "1.3.0".into(),
            ..Default::default()
        };
        let f = d.features();
        assert!(f.contains(&"VK_KHR_16bit_storage".to_string()), "{f:?}");
        assert!(
            f.iter().any(|x| x.starts_with("absent:") && x.contains("VK_KHR_cooperative_matrix")),
            "{f:?}"
        );
    }
}
