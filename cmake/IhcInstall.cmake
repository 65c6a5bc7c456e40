# Install helpers shared by agent/ and client/ (included from the top CMakeLists.txt).

# ihc_install_pkgconfig(<template.pc.in>): installs <name>.pc into <libdir>/pkgconfig, written
# at install time (cmake/install-pkgconfig.cmake) for the prefix actually installed to, so
# that `cmake --install build --prefix P` gives a .pc naming P, not the configured prefix.
function(ihc_install_pkgconfig template)
  get_filename_component(_name "${template}" NAME)
  string(REGEX REPLACE "\\.in$" "" _name "${_name}")
  install(CODE "
    set(IHC_PC_TEMPLATE \"${CMAKE_CURRENT_SOURCE_DIR}/${template}\")
    set(IHC_PC_OUT \"${CMAKE_CURRENT_BINARY_DIR}/${_name}\")
    set(IHC_PC_VERSION \"${PROJECT_VERSION}\")
    set(IHC_PC_LIBDIR_REL \"${CMAKE_INSTALL_LIBDIR}\")
    set(IHC_PC_INCLUDEDIR_REL \"${CMAKE_INSTALL_INCLUDEDIR}\")
    include(\"${PROJECT_SOURCE_DIR}/cmake/install-pkgconfig.cmake\")")
endfunction()
